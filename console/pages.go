package console

import (
	"fmt"
	"net/http"
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
	return s.Prices[model].cost(in, out)
}

// cost is the estimated cost in US dollars of in and out tokens at p.
func (p Price) cost(in, out int64) float64 {
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
	tok, err := s.tokensPerDay(ctx, dayStart)
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

// cell defuses spreadsheet formulas in text that people or platforms chose.
func cell(s string) string {
	if s != "" && (s[0] == '=' || s[0] == '+' || s[0] == '-' || s[0] == '@' || s[0] == '\t' || s[0] == '\r') {
		return "'" + s
	}
	return s
}
