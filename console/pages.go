package console

import (
	"bytes"
	"cmp"
	"encoding/csv"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/talonhq/talon/store"
)

// page is what every page's layout needs.
type page struct {
	Title string
	// Nav is the page's name in the navigation ("overview", "usage").
	Nav string
	// CSRF is the token every form posts back.
	CSRF string
}

// render writes the page built by content, with status.
func (s *Server) render(w http.ResponseWriter, status int, p page, content func(d *doc)) {
	var d doc
	d.layout(p, content)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(d.b.Bytes())
}

// fail logs err under a reference and shows the operator only the reference.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	ref := randomToken()[:10]
	s.Log.Error().Err(err).Str("ref", ref).Str("path", r.URL.Path).Msg("console: page failed")
	http.Error(w, "the console could not build this page (reference "+ref+" in the gateway's log)", http.StatusInternalServerError)
}

func formatInt(n int64) string {
	s := strconv.FormatInt(n, 10)
	neg := n < 0
	if neg {
		s = s[1:]
	}
	var b []byte
	for i := range len(s) {
		if i > 0 && (len(s)-i)%3 == 0 {
			b = append(b, ',')
		}
		b = append(b, s[i])
	}
	if neg {
		return "-" + string(b)
	}
	return string(b)
}

func formatCost(usd float64) string {
	switch {
	case usd == 0:
		return "$0"
	case usd < 0.01:
		return fmt.Sprintf("$%.4f", usd)
	default:
		return fmt.Sprintf("$%.2f", usd)
	}
}

func (s *Server) cost(model string, in, out int64) float64 {
	p := s.Prices[model]
	return (float64(in)*p.Input + float64(out)*p.Output) / 1e6
}

// overviewData is the Overview page.
type overviewData struct {
	Channels                []Channel
	TurnsHour, FailedDay    int64
	TurnsDay                int64
	PerMinute               string
	P50, P95                time.Duration
	Finished                int
	TodayIn, TodayOut       int64
	TodayCost               float64
	TurnsChart, TokensChart markup
	Audit                   []store.ConsoleAction
}

func (s *Server) overview(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	now := s.Now().UTC()
	d := overviewData{}
	if s.Channels != nil {
		d.Channels = s.Channels()
	}
	hourStart := now.Truncate(time.Hour).Add(-23 * time.Hour)
	turns, err := s.Store.TurnsPer(ctx, hourStart, time.Hour)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byHour := map[time.Time]store.TurnBucket{}
	for _, t := range turns {
		byHour[t.Start] = t
		d.TurnsDay += t.Turns
		d.FailedDay += t.Failed
	}
	lastHour, err := s.Store.TurnsPer(ctx, now.Add(-time.Hour), time.Minute)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	for _, t := range lastHour {
		d.TurnsHour += t.Turns
	}
	d.PerMinute = strconv.FormatFloat(float64(d.TurnsHour)/60, 'f', 1, 64)
	durs, err := s.Store.TurnDurations(ctx, now.Add(-24*time.Hour))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d.Finished = len(durs)
	if len(durs) > 0 {
		d.P50, d.P95 = percentile(durs, 50), percentile(durs, 95)
	}
	var hourBars []bar
	for i := range 24 {
		h := hourStart.Add(time.Duration(i) * time.Hour)
		b := byHour[h]
		label := ""
		if h.Hour()%6 == 0 {
			label = h.Format("15:04")
		}
		hourBars = append(hourBars, bar{Label: label, Value: float64(b.Turns), Alt: float64(b.Failed),
			Title: fmt.Sprintf("%s UTC: %d turns, %d failed", h.Format("Jan 2 15:04"), b.Turns, b.Failed)})
	}
	d.TurnsChart = barChart("Turns per hour, last 24 hours (failed in red)", hourBars)

	today := now.Truncate(24 * time.Hour)
	dayStart := today.AddDate(0, 0, -29)
	tok, err := s.Store.TokensPerDay(ctx, dayStart)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byDay := map[time.Time]int64{}
	costDay := map[time.Time]float64{}
	for _, t := range tok {
		byDay[t.Start] += t.InputTokens + t.OutputTokens
		costDay[t.Start] += s.cost(t.Model, t.InputTokens, t.OutputTokens)
		if t.Start.Equal(today) {
			d.TodayIn += t.InputTokens
			d.TodayOut += t.OutputTokens
			d.TodayCost += s.cost(t.Model, t.InputTokens, t.OutputTokens)
		}
	}
	var dayBars []bar
	for i := range 30 {
		day := dayStart.AddDate(0, 0, i)
		label := ""
		if (29-i)%7 == 0 {
			label = day.Format("Jan 2")
		}
		dayBars = append(dayBars, bar{Label: label, Value: float64(byDay[day]),
			Title: fmt.Sprintf("%s: %s tokens, %s", day.Format("Jan 2"), formatInt(byDay[day]), formatCost(costDay[day]))})
	}
	d.TokensChart = barChart("Tokens per day, last 30 days", dayBars)
	if d.Audit, err = s.Store.ConsoleActions(ctx, 20); err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, http.StatusOK, page{Title: "Overview", Nav: "overview", CSRF: sess.csrf}, d.write)
}

// percentile of sorted durations (nearest rank).
func percentile(sorted []time.Duration, p int) time.Duration {
	i := (len(sorted)*p + 99) / 100
	return sorted[max(0, min(len(sorted), i)-1)]
}

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
)

// usageDays reads ?days= (1 to 366, default 30).
func usageDays(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("days"))
	if err != nil || n < 1 {
		return 30
	}
	return min(n, 366)
}

func (s *Server) usageRows(r *http.Request) ([]store.UsageRow, time.Time, int, error) {
	days := usageDays(r)
	today := s.Now().UTC().Truncate(24 * time.Hour)
	from := today.AddDate(0, 0, 1-days)
	rows, err := s.Store.Usage(r.Context(), from, today.AddDate(0, 0, 1))
	return rows, from, days, err
}

func (s *Server) usage(w http.ResponseWriter, r *http.Request, sess *session) {
	rows, from, days, err := s.usageRows(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	d := usageData{Days: days}
	// Keyed by the parts of each name, joined only for a new entry.
	type key struct{ a, b, c string }
	sums := [4]map[key]*usageTotal{{}, {}, {}, {}}
	perDay := map[time.Time]int64{}
	for _, u := range rows {
		c := s.cost(u.Model, u.InputTokens, u.OutputTokens)
		keys := [4]key{{u.Platform, u.Workspace, u.User}, {u.Platform, workspaceOrServer(u), ""}, {u.Platform, u.Channel, ""}, {u.Model, "", ""}}
		for i, k := range keys {
			t := sums[i][k]
			if t == nil {
				name := [4]string{k.a + ":" + k.b + ":" + k.c, k.a + ":" + k.b, k.a + ":" + k.b, k.a}[i]
				if i == 1 && k.b == "" {
					// Discord DMs (and usage recorded before servers were).
					name += " (no server)"
				}
				t = &usageTotal{Key: name}
				sums[i][k] = t
			}
			t.add(u, c)
		}
		d.Total.add(u, c)
		perDay[u.Day] += u.InputTokens + u.OutputTokens
		if len(d.Rows) < maxUsageRows {
			d.Rows = append(d.Rows, usageRow{u, c})
		} else {
			d.More++
		}
	}
	lists := make([][]usageTotal, 4)
	for i, m := range sums {
		for _, t := range m {
			lists[i] = append(lists[i], *t)
		}
		slices.SortFunc(lists[i], func(a, b usageTotal) int {
			return cmp.Or(cmp.Compare(b.Total, a.Total), cmp.Compare(a.Key, b.Key))
		})
	}
	d.Users, d.Workspaces, d.Channels, d.Models = lists[0], lists[1], lists[2], lists[3]
	d.UserCount = len(d.Users)
	d.Users = d.Users[:min(len(d.Users), maxUsageUsers)]
	d.Channels = d.Channels[:min(len(d.Channels), maxUsageUsers)]
	var bars []bar
	step := max(1, days/5)
	for i := range days {
		day := from.AddDate(0, 0, i)
		label := ""
		if (days-1-i)%step == 0 {
			label = day.Format("Jan 2")
		}
		bars = append(bars, bar{Label: label, Value: float64(perDay[day]),
			Title: day.Format("Jan 2") + ": " + formatInt(perDay[day]) + " tokens"})
	}
	d.Chart = barChart(fmt.Sprintf("Tokens per day, last %d days", days), bars)
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

// usageCSV downloads the daily usage rows. Cells that a spreadsheet would
// read as a formula are prefixed with a quote.
func (s *Server) usageCSV(w http.ResponseWriter, r *http.Request, _ *session) {
	rows, from, _, err := s.usageRows(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var buf bytes.Buffer
	cw := csv.NewWriter(&buf)
	_ = cw.Write([]string{"day", "platform", "workspace_or_server", "user", "channel", "model", "calls", "input_tokens", "output_tokens", "cost_usd"})
	for _, u := range rows {
		_ = cw.Write([]string{u.Day.Format("2006-01-02"), cell(u.Platform), cell(workspaceOrServer(u)), cell(u.User), cell(u.Channel), cell(u.Model),
			strconv.FormatInt(u.Calls, 10), strconv.FormatInt(u.InputTokens, 10), strconv.FormatInt(u.OutputTokens, 10),
			strconv.FormatFloat(s.cost(u.Model, u.InputTokens, u.OutputTokens), 'f', 6, 64)})
	}
	cw.Flush()
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	w.Header().Set("Content-Disposition", `attachment; filename="talon-usage-`+from.Format("2006-01-02")+`.csv"`)
	_, _ = w.Write(buf.Bytes())
}

// cell defuses spreadsheet formulas in text that people or platforms chose.
func cell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r') {
		return "'" + s
	}
	return s
}
