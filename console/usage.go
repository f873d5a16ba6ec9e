package console

import (
	"bytes"
	"cmp"
	"context"
	"encoding/csv"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/talonhq/talon/store"
)

// The Usage page and its CSV sum the store's daily usage rows of a period
// (41,000 rows for 30 days of 10,000 users). The rows of settled days
// change only when a resumed turn records a step of such a day again, which
// a store that says so (settledUsage) tells by a new generation: what the
// page derives from those days (its sums, the CSV's lines) is kept under
// that generation (usageMemo), and each load adds the days since.

// settledUsage is a Store that tells which days' usage is settled (both
// stores do): what Usage and TokensPerDay returned for the days before
// before, read after UsageSettled returned gen, holds while it returns gen
// again.
type settledUsage interface {
	UsageSettled(ctx context.Context) (gen uint64, before time.Time, err error)
}

var _ settledUsage = (*store.DB)(nil)

// usageTotal is one line of a usage breakdown.
type usageTotal struct {
	Key                       string
	Calls, InputTokens, Total int64
	OutputTokens              int64
	Cost                      float64
}

type usageData struct {
	Days                        int
	Chart                       markup
	Total                       usageTotal
	Users, Workspaces, Channels []usageTotal
	Models                      []usageTotal
	Rows                        []usageRow
	More                        int
	UserCount                   int
}

type usageRow struct {
	store.UsageRow
	Cost float64
}

// The page shows the newest maxUsageRows daily rows and the
// maxUsageUsers users and channels that used most; the CSV has all.
const (
	maxUsageRows  = 200
	maxUsageUsers = 100
	// defaultUsageDays is the period of the Usage page and its CSV
	// without ?days= (the navigation's links).
	defaultUsageDays = 30
)

// usageDays reads ?days= (1 to 366, default defaultUsageDays).
func usageDays(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("days"))
	if err != nil || n < 1 {
		return defaultUsageDays
	}
	return min(n, 366)
}

// usagePeriod is the days a request asks for: from (the first) to to
// (after the last), split at settled: the days before it are settled.
type usagePeriod struct {
	days              int
	from, settled, to time.Time
	// gen is the store's usage generation, read before any row; ok when
	// the store tells it.
	gen uint64
	ok  bool
}

func (s *Server) usagePeriod(r *http.Request) (usagePeriod, error) {
	return s.periodOf(r.Context(), usageDays(r))
}

// periodOf is the period of the last days days.
func (s *Server) periodOf(ctx context.Context, days int) (usagePeriod, error) {
	today := s.Now().UTC().Truncate(24 * time.Hour)
	p := usagePeriod{days: days, from: today.AddDate(0, 0, 1-days), to: today.AddDate(0, 0, 1)}
	p.settled = p.from
	if st, ok := s.Store.(settledUsage); ok {
		var before time.Time
		var err error
		if p.gen, before, err = st.UsageSettled(ctx); err != nil {
			return p, err
		}
		p.ok = true
		switch before = before.UTC().Truncate(24 * time.Hour); {
		case before.After(p.to):
			p.settled = p.to
		case before.After(p.from):
			p.settled = before
		}
	}
	return p, nil
}

// usageKey names a line of a breakdown by its parts, joined only for a new
// line.
type usageKey struct{ a, b, c string }

// usageSums is what the page sums from usage rows.
type usageSums struct {
	total usageTotal
	// lists are the lines by user, workspace or server, channel and
	// model; index finds each line by its key.
	lists  [4][]usageTotal
	index  [4]map[usageKey]int
	perDay map[time.Time]int64
	// rows are the first maxUsageRows rows, with their cost; n counts all.
	rows []usageRow
	n    int
}

func (s *Server) sumUsage(rows []store.UsageRow) *usageSums {
	m := &usageSums{perDay: map[time.Time]int64{}}
	for i := range m.index {
		m.index[i] = make(map[usageKey]int, [4]int{len(rows) / 4, 16, 64, 8}[i])
	}
	// The rows come by day, and often several of a key in a row: the
	// last line of each list, the day's sum and the last model's price
	// are kept at hand (a cold 30 days of 10,000 users is 40,000 rows).
	var last [4]usageKey
	var lastAt [4]int
	for i := range lastAt {
		lastAt[i] = -1
	}
	var day time.Time
	var daySum int64
	var model string
	var price Price
	priced := false
	for _, u := range rows {
		if !priced || u.Model != model {
			model, price, priced = u.Model, s.Prices[u.Model], true
		}
		c := price.cost(u.InputTokens, u.OutputTokens)
		keys := [4]usageKey{{u.Platform, u.Workspace, u.User}, {u.Platform, workspaceOrServer(u), ""}, {u.Platform, u.Channel, ""}, {u.Model, "", ""}}
		for i, k := range keys {
			at := lastAt[i]
			if at < 0 || k != last[i] {
				var ok bool
				if at, ok = m.index[i][k]; !ok {
					at = len(m.lists[i])
					m.lists[i] = append(m.lists[i], usageTotal{Key: keyName(i, k)})
					m.index[i][k] = at
				}
				last[i], lastAt[i] = k, at
			}
			m.lists[i][at].add(u, c)
		}
		m.total.add(u, c)
		if !u.Day.Equal(day) {
			if daySum != 0 {
				m.perDay[day] += daySum
			}
			day, daySum = u.Day, 0
		}
		daySum += u.InputTokens + u.OutputTokens
		if len(m.rows) < maxUsageRows {
			m.rows = append(m.rows, usageRow{u, c})
		}
		m.n++
	}
	if daySum != 0 {
		m.perDay[day] += daySum
	}
	return m
}

// keyName is the name shown of the line of list i with key k.
func keyName(i int, k usageKey) string {
	var name string
	switch i {
	case 0:
		name = k.a + ":" + k.b + ":" + k.c
	case 1, 2:
		name = k.a + ":" + k.b
	default:
		name = k.a
	}
	if i == 1 && k.b == "" {
		// Discord DMs (and usage recorded before servers were).
		name += " (no server)"
	}
	return name
}

// sortLists orders each list most tokens first, then by name, and points
// the index at the new places.
func (m *usageSums) sortLists() {
	for i, l := range m.lists {
		order := make([]int, len(l))
		for j := range order {
			order[j] = j
		}
		slices.SortFunc(order, func(a, b int) int { return compareTotals(l[a], l[b]) })
		sorted := make([]usageTotal, len(l))
		at := make([]int, len(l))
		for j, o := range order {
			sorted[j], at[o] = l[o], j
		}
		m.lists[i] = sorted
		for k, j := range m.index[i] {
			m.index[i][k] = at[j]
		}
	}
}

func sortTotals(l []usageTotal) { slices.SortFunc(l, compareTotals) }

// compareTotals orders most tokens first, then by name.
func compareTotals(a, b usageTotal) int {
	if a.Total != b.Total {
		return cmp.Compare(b.Total, a.Total)
	}
	return cmp.Compare(a.Key, b.Key)
}

// usageMemo keeps the sums and CSV lines of the settled days of the
// periods asked for lately, under the store's generation.
type usageMemo struct {
	mu sync.Mutex
	// entries, at most maxUsageMemo, newest last; guarded by mu.
	entries []*usageMemoEntry
}

// maxUsageMemo periods are kept, and CSV lines of at most maxUsageMemoCSV
// bytes in all (a year of 10,000 users' daily rows takes more; the oldest
// period's lines go first).
const (
	maxUsageMemo    = 4
	maxUsageMemoCSV = 16 << 20
)

type usageMemoEntry struct {
	gen           uint64
	from, settled time.Time
	// sums, csv and tokens (the Overview's TokensPerDay), once derived;
	// never changed after, but csv may be dropped (maxUsageMemoCSV).
	sums      *usageSums
	csv       []byte
	tokens    []store.TokenBucket
	tokensSet bool
}

// tokensPerDay is Store.TokensPerDay, with the buckets of settled days
// kept under the store's usage generation.
func (s *Server) tokensPerDay(ctx context.Context, from time.Time) ([]store.TokenBucket, error) {
	st, ok := s.Store.(settledUsage)
	if !ok {
		return s.Store.TokensPerDay(ctx, from)
	}
	gen, before, err := st.UsageSettled(ctx)
	if err != nil {
		return nil, err
	}
	p := usagePeriod{from: from, settled: before.UTC().Truncate(24 * time.Hour), gen: gen, ok: true}
	if !p.settled.After(from) {
		return s.Store.TokensPerDay(ctx, from)
	}
	if e := s.usageMemo.get(p); e.tokensSet {
		recent, err := s.Store.TokensPerDay(ctx, p.settled)
		if err != nil {
			return nil, err
		}
		return append(slices.Clip(e.tokens), recent...), nil
	}
	all, err := s.Store.TokensPerDay(ctx, from)
	if err != nil {
		return nil, err
	}
	n := 0
	for n < len(all) && all[n].Start.Before(p.settled) {
		n++
	}
	old := slices.Clone(all[:n])
	s.usageMemo.put(p, func(e *usageMemoEntry) { e.tokens, e.tokensSet = old, true })
	return all, nil
}

// get returns the entry of p's settled days, when kept.
func (c *usageMemo) get(p usagePeriod) usageMemoEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.entries {
		if e.gen == p.gen && e.from.Equal(p.from) && e.settled.Equal(p.settled) {
			return *e
		}
	}
	return usageMemoEntry{}
}

// put keeps what set adds to the entry of p's settled days, dropping the
// entries of other generations.
func (c *usageMemo) put(p usagePeriod, set func(e *usageMemoEntry)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.entries = slices.DeleteFunc(c.entries, func(e *usageMemoEntry) bool { return e.gen != p.gen })
	i := slices.IndexFunc(c.entries, func(e *usageMemoEntry) bool { return e.from.Equal(p.from) && e.settled.Equal(p.settled) })
	if i < 0 {
		if len(c.entries) >= maxUsageMemo {
			c.entries = slices.Delete(c.entries, 0, 1)
		}
		c.entries = append(c.entries, &usageMemoEntry{gen: p.gen, from: p.from, settled: p.settled})
		i = len(c.entries) - 1
	}
	set(c.entries[i])
	n := 0
	for _, e := range c.entries {
		n += len(e.csv)
	}
	for _, e := range c.entries {
		if n <= maxUsageMemoCSV {
			break
		}
		n -= len(e.csv)
		e.csv = nil
	}
}

// settledSums are the sums of p's settled days: kept in memory, else kept
// in the store (keptUsage), else summed from the store's rows and kept in
// both.
func (s *Server) settledSums(ctx context.Context, p usagePeriod) (*usageSums, error) {
	if p.ok {
		if e := s.usageMemo.get(p); e.sums != nil {
			return e.sums, nil
		}
	}
	st, keeps := s.Store.(keptUsage)
	keeps = keeps && p.ok && p.settled.After(p.from)
	name := "sums " + s.pricesKey()
	if keeps {
		data, err := st.KeptUsagePeriod(ctx, name, p.gen, p.from, p.settled)
		if err != nil {
			return nil, err
		}
		if data != nil {
			// A value of another version is summed again and replaced.
			if m, err := decodeUsageSums(data); err == nil {
				s.usageMemo.put(p, func(e *usageMemoEntry) { e.sums = m })
				return m, nil
			}
		}
	}
	rows, err := s.Store.Usage(ctx, p.from, p.settled)
	if err != nil {
		return nil, err
	}
	m := s.sumUsage(rows)
	m.sortLists()
	if p.ok {
		s.usageMemo.put(p, func(e *usageMemoEntry) { e.sums = m })
	}
	if keeps {
		// Derived: a page that could not keep it is served all the same.
		if err := st.KeepUsagePeriod(ctx, name, p.gen, p.from, p.settled, m.encode(nil)); err != nil {
			s.Log.Warn().Err(err).Msg("console: keep the usage sums of settled days")
		}
	}
	return m, nil
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request, sess *session) {
	p, err := s.usagePeriod(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	old, err := s.settledSums(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rows, err := s.Store.Usage(r.Context(), p.settled, p.to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	recent := s.sumUsage(rows)
	d := usageData{Days: p.days}
	// The newest rows first: the unsettled days', then the settled days'.
	d.Total = recent.total
	d.Total.addTotal(old.total)
	d.Rows = append(recent.rows, old.rows[:min(len(old.rows), maxUsageRows-len(recent.rows))]...)
	d.More = recent.n + old.n - len(d.Rows)
	lists := make([][]usageTotal, 4)
	for i := range lists {
		l := slices.Clone(old.lists[i])
		for k, j := range recent.index[i] {
			if at, ok := old.index[i][k]; ok {
				l[at].addTotal(recent.lists[i][j])
			} else {
				l = append(l, recent.lists[i][j])
			}
		}
		sortTotals(l)
		lists[i] = l
	}
	d.Users, d.Workspaces, d.Channels, d.Models = lists[0], lists[1], lists[2], lists[3]
	d.UserCount = len(d.Users)
	d.Users = d.Users[:min(len(d.Users), maxUsageUsers)]
	d.Channels = d.Channels[:min(len(d.Channels), maxUsageUsers)]
	var bars []bar
	step := max(1, p.days/5)
	for i := range p.days {
		day := p.from.AddDate(0, 0, i)
		label := ""
		if (p.days-1-i)%step == 0 {
			label = day.Format("Jan 2")
		}
		n := old.perDay[day] + recent.perDay[day]
		bars = append(bars, bar{Label: label, Value: float64(n), Title: day.Format("Jan 2") + ": " + formatInt(n) + " tokens"})
	}
	d.Chart = barChart(fmt.Sprintf("Tokens per day, last %d days", p.days), bars)
	s.render(w, http.StatusOK, page{Title: "Usage", Nav: "usage", CSRF: sess.csrf}, d.write)
}

// workspaceOrServer is the workspace of a Slack row, the server of a
// Discord row sent in one ("" in a DM).
func workspaceOrServer(u store.UsageRow) string {
	if u.Workspace != "" {
		return u.Workspace
	}
	return u.Server
}

func (t *usageTotal) add(u store.UsageRow, cost float64) {
	t.Calls += u.Calls
	t.InputTokens += u.InputTokens
	t.OutputTokens += u.OutputTokens
	t.Total += u.InputTokens + u.OutputTokens
	t.Cost += cost
}

func (t *usageTotal) addTotal(o usageTotal) {
	t.Calls += o.Calls
	t.InputTokens += o.InputTokens
	t.OutputTokens += o.OutputTokens
	t.Total += o.Total
	t.Cost += o.Cost
}

// usageCSV downloads the daily usage rows, newest day first. Cells that a
// spreadsheet would read as a formula are prefixed with a quote.
func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request, _ *session) {
	p, err := s.usagePeriod(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	old, err := s.settledCSV(r.Context(), p)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	rows, err := s.Store.Usage(r.Context(), p.settled, p.to)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	head := s.csvLines(nil)
	recent := s.csvLines(rows)
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="talon-usage-`+p.from.Format("2006-01-02")+`.csv"`)
	w.Header().Set("Content-Length", strconv.Itoa(len(head)+len(recent)+len(old)))
	for _, b := range [][]byte{head, recent, old} {
		if _, err := w.Write(b); err != nil {
			return
		}
	}
}

// settledCSV is the CSV lines of p's settled days: kept in memory, else
// kept in the store (keptUsage), else written from the store's rows and
// kept in both.
func (s *Server) settledCSV(ctx context.Context, p usagePeriod) ([]byte, error) {
	if !p.ok {
		return s.settledCSVLines(ctx, p)
	}
	if old := s.usageMemo.get(p).csv; old != nil {
		return old, nil
	}
	st, keeps := s.Store.(keptUsage)
	name := "csv " + s.pricesKey()
	if keeps && p.settled.After(p.from) {
		old, err := st.KeptUsagePeriod(ctx, name, p.gen, p.from, p.settled)
		if err != nil {
			return nil, err
		}
		if old != nil {
			s.memoCSV(p, old)
			return old, nil
		}
	}
	old, err := s.settledCSVLines(ctx, p)
	if err != nil {
		return nil, err
	}
	s.memoCSV(p, old)
	if keeps && p.settled.After(p.from) {
		// Derived: a page that could not keep it is served all the same.
		if err := st.KeepUsagePeriod(ctx, name, p.gen, p.from, p.settled, old); err != nil {
			s.Log.Warn().Err(err).Msg("console: keep the usage CSV of settled days")
		}
	}
	return old, nil
}

func (s *Server) settledCSVLines(ctx context.Context, p usagePeriod) ([]byte, error) {
	rows, err := s.Store.Usage(ctx, p.from, p.settled)
	if err != nil {
		return nil, err
	}
	return s.csvLines(rows), nil
}

func (s *Server) memoCSV(p usagePeriod, b []byte) {
	if len(b) <= maxUsageMemoCSV {
		s.usageMemo.put(p, func(e *usageMemoEntry) { e.csv = b })
	}
}

// keptUsage is a Store that keeps what the console derives from a period
// of settled days (both stores do: usage_periods), so that a console with
// nothing in memory (a restart, another replica) reads it back.
type keptUsage interface {
	KeptUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time) ([]byte, error)
	KeepUsagePeriod(ctx context.Context, name string, gen uint64, from, end time.Time, data []byte) error
}

var _ keptUsage = (*store.DB)(nil)

// pricesKey names the prices (a kept period's costs are theirs): the
// models and their prices, in the order of the models' names.
func (s *Server) pricesKey() string {
	var b []byte
	for _, m := range slices.Sorted(maps.Keys(s.Prices)) {
		b = strconv.AppendQuote(b, m)
		b = append(b, '=')
		b = strconv.AppendFloat(b, s.Prices[m].Input, 'g', -1, 64)
		b = append(b, '/')
		b = strconv.AppendFloat(b, s.Prices[m].Output, 'g', -1, 64)
		b = append(b, ';')
	}
	return string(b)
}

// csvLines writes rows as CSV lines; no rows (nil) writes the header.
// The lines are written as encoding/csv's Writer writes them (comma, "\n")
// but without its record of strings, each number appended in place: a
// cold CSV of 30 days is 40,000 lines.
func (s *Server) csvLines(rows []store.UsageRow) []byte {
	if rows == nil {
		var buf bytes.Buffer
		cw := csv.NewWriter(&buf)
		_ = cw.Write([]string{"day", "platform", "workspace_or_server", "user", "channel", "model", "calls", "input_tokens", "output_tokens", "cost_usd"})
		cw.Flush()
		return buf.Bytes()
	}
	b := make([]byte, 0, 96*len(rows))
	// The rows come by day: each day is formatted once; the last model's
	// price is kept at hand.
	var day time.Time
	var dayText string
	var model string
	var price Price
	priced := false
	for _, u := range rows {
		if !u.Day.Equal(day) || dayText == "" {
			day, dayText = u.Day, u.Day.Format("2006-01-02")
		}
		if !priced || u.Model != model {
			model, price, priced = u.Model, s.Prices[u.Model], true
		}
		b = appendCSVField(b, dayText)
		for _, f := range [...]string{u.Platform, workspaceOrServer(u), u.User, u.Channel, u.Model} {
			b = append(b, ',')
			b = appendCSVField(b, cell(f))
		}
		b = append(b, ',')
		b = strconv.AppendInt(b, u.Calls, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, u.InputTokens, 10)
		b = append(b, ',')
		b = strconv.AppendInt(b, u.OutputTokens, 10)
		b = append(b, ',')
		b = strconv.AppendFloat(b, price.cost(u.InputTokens, u.OutputTokens), 'f', 6, 64)
		b = append(b, '\n')
	}
	return b
}

// appendCSVField appends field as encoding/csv's Writer writes it with a
// comma and UseCRLF unset: quoted, its quotes doubled, when it holds a
// comma, a quote, a CR or an LF, begins with a space (as unicode.IsSpace
// says) or is \.; as it is otherwise.
func appendCSVField(b []byte, field string) []byte {
	if !csvNeedsQuotes(field) {
		return append(b, field...)
	}
	b = append(b, '"')
	for i := 0; i < len(field); i++ {
		if field[i] == '"' {
			b = append(b, '"')
		}
		b = append(b, field[i])
	}
	return append(b, '"')
}

// csvNeedsQuotes is encoding/csv's Writer.fieldNeedsQuotes for a comma.
func csvNeedsQuotes(field string) bool {
	if field == "" {
		return false
	}
	if field == `\.` {
		return true
	}
	for i := 0; i < len(field); i++ {
		if c := field[i]; c == '\n' || c == '\r' || c == '"' || c == ',' {
			return true
		}
	}
	r, _ := utf8.DecodeRuneInString(field)
	return unicode.IsSpace(r)
}
