package console

import (
	"strconv"
	"strings"
)

func stat(d *doc, label, value string, bad bool) {
	d.raw(`<div><dt>`)
	d.text(label)
	if bad {
		d.raw(`</dt><dd class="bad">`)
	} else {
		d.raw(`</dt><dd>`)
	}
	d.text(value)
	d.raw(`</dd></div>
`)
}

func figure(d *doc, chart markup, caption string) {
	d.raw(`<figure>`)
	d.raw(chart)
	d.raw(`<figcaption>`)
	d.text(caption)
	d.raw(`</figcaption></figure>
`)
}

func (o *overviewData) write(d *doc) {
	d.raw(`<section aria-labelledby="now"><h2 id="now">Now</h2><dl class="stats">
`)
	stat(d, "Turns per minute (last hour)", o.PerMinute, false)
	stat(d, "Turns (24 h)", formatInt(o.TurnsDay), false)
	stat(d, "Failed turns (24 h)", formatInt(o.FailedDay), o.FailedDay > 0)
	pct := "–"
	if o.Finished > 0 {
		pct = strconv.FormatInt(o.P50.Milliseconds(), 10) + " ms / " + strconv.FormatInt(o.P95.Milliseconds(), 10) + " ms"
	}
	stat(d, "Turn time p50 / p95 (24 h)", pct, false)
	stat(d, "Tokens today (in / out)", formatInt(o.TodayIn)+" / "+formatInt(o.TodayOut), false)
	stat(d, "Estimated cost today", formatCost(o.TodayCost), false)
	d.raw(`</dl></section>
<section aria-labelledby="channels"><h2 id="channels">Channels</h2>
`)
	if len(o.Channels) == 0 {
		d.raw(`<p>No Slack or Discord channel is configured.</p>`)
	} else {
		var rows [][]string
		for _, c := range o.Channels {
			rows = append(rows, []string{c.Name, c.State})
		}
		d.table([]string{"Channel", "State"}, nil, rows)
	}
	d.raw(`</section>
<section aria-labelledby="charts"><h2 id="charts">Activity</h2>
`)
	figure(d, o.TurnsChart, "Turns per hour, last 24 hours (UTC); failed turns in red.")
	figure(d, o.TokensChart, "Tokens per day, last 30 days (UTC).")
	d.raw(`</section>
<section aria-labelledby="audit"><h2 id="audit">Admin actions</h2>
`)
	if len(o.Audit) == 0 {
		d.raw(`<p>None yet.</p>`)
	} else {
		var rows [][]string
		for _, a := range o.Audit {
			rows = append(rows, []string{a.At.UTC().Format("2006-01-02 15:04:05") + " UTC", a.Actor, a.Action, a.Target, a.Remote})
		}
		d.table([]string{"When", "Who", "Action", "Target", "From"}, nil, rows)
	}
	d.raw(`</section>
`)
}

var usageNum = map[int]bool{1: true, 2: true, 3: true, 4: true}

func totals(d *doc, title, id string, ts []usageTotal) {
	d.raw(`<section class="totals"`)
	d.attr("aria-labelledby", id)
	d.raw(`><h2`)
	d.attr("id", id)
	d.raw(`>`)
	d.text(title)
	d.raw(`</h2>
`)
	if len(ts) == 0 {
		d.raw(`<p>None.</p>`)
	} else {
		var rows [][]string
		for _, t := range ts {
			rows = append(rows, []string{t.Key, formatInt(t.Calls), formatInt(t.InputTokens), formatInt(t.OutputTokens), formatCost(t.Cost)})
		}
		d.table([]string{"Name", "Calls", "In", "Out", "Cost"}, usageNum, rows)
	}
	d.raw(`</section>
`)
}

// usageChoices are the periods the Usage page offers, in days.
var usageChoices = []int{1, 7, 30, 90, 366}

func (u *usageData) write(d *doc) {
	days := strconv.Itoa(u.Days)
	d.raw(`<form method="get" action="/console/usage" class="filters">
<label for="days">Days</label>
<select id="days" name="days">`)
	for _, n := range usageChoices {
		d.raw(`<option`)
		d.attr("value", strconv.Itoa(n))
		if n == u.Days {
			d.raw(` selected`)
		}
		d.raw(`>`)
		d.text(strconv.Itoa(n))
		d.raw(`</option>`)
	}
	d.raw(`</select>
<button type="submit">Show</button>
<a class="button"`)
	d.attr("href", "/console/usage.csv?days="+days)
	d.raw(` download>Download CSV</a>
</form>
<p>Tokens as the providers reported them for each model call; cost estimated from <code>llm.prices</code>. Total: <strong>`)
	d.text(formatInt(u.Total.Total))
	d.raw(`</strong> tokens in `)
	d.text(formatInt(u.Total.Calls))
	d.raw(` calls, <strong>`)
	d.text(formatCost(u.Total.Cost))
	d.raw(`</strong>.</p>
`)
	figure(d, u.Chart, "Tokens per day (UTC).")
	totals(d, "By user", "by-user", u.Users)
	if u.UserCount > len(u.Users) {
		d.raw(`<p>The `)
		d.text(strconv.Itoa(len(u.Users)))
		d.raw(` users who used most, of `)
		d.text(strconv.Itoa(u.UserCount))
		d.raw(`; the CSV has everyone.</p>`)
	}
	totals(d, "By workspace or server", "by-workspace", u.Workspaces)
	totals(d, "By channel", "by-channel", u.Channels)
	totals(d, "By model", "by-model", u.Models)
	d.raw(`<section aria-labelledby="daily"><h2 id="daily">Per day</h2>
`)
	if len(u.Rows) == 0 {
		d.raw(`<p>No model calls in this period.</p>`)
	} else {
		var rows [][]string
		for _, r := range u.Rows {
			rows = append(rows, []string{r.Day.Format("2006-01-02"), strings.Join([]string{r.Platform, r.Workspace, r.User}, ":"), r.Channel, r.Model,
				formatInt(r.Calls), formatInt(r.InputTokens), formatInt(r.OutputTokens), formatCost(r.Cost)})
		}
		d.table([]string{"Day", "User", "Channel", "Model", "Calls", "In", "Out", "Cost"}, map[int]bool{4: true, 5: true, 6: true, 7: true}, rows)
		if u.More > 0 {
			d.raw(`<p>`)
			d.text(strconv.Itoa(u.More))
			d.raw(` more rows are in the CSV.</p>`)
		}
	}
	d.raw(`</section>
`)
}
