package console

import (
	"net/http"
	"strconv"
	"time"
)

// Budgets are the token budgets the runtime enforces, shown against each
// user's figures; 0 means none.
type Budgets struct {
	UserDaily, UserMonthly int64
	// Admins are exempt ("platform:workspace:user").
	Admins map[string]bool
}

// maxUsersListed is how many users the Users page lists.
const maxUsersListed = 200

func (s *Server) users(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query().Get("q")
	if len(q) > 200 {
		q = q[:200]
	}
	now := s.Now().UTC()
	today := now.Truncate(24 * time.Hour)
	month := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	list, total, err := s.Store.UsersByUsage(r.Context(), month, today, q, maxUsersListed)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b := s.Budgets
	against := func(used, budget int64, admin bool) string {
		switch {
		case admin:
			return formatInt(used) + " (admin: exempt)"
		case budget <= 0:
			return formatInt(used)
		}
		out := formatInt(used) + " of " + formatInt(budget) + " (" + strconv.FormatInt(used*100/budget, 10) + "%)"
		if used >= budget {
			out += " over budget"
		}
		return out
	}
	s.render(w, http.StatusOK, page{Title: "Users", Nav: "users", CSRF: sess.csrf}, func(d *doc) {
		d.raw(`<form method="get" action="/console/users" class="filters">
<label for="q">User</label><input id="q" name="q" type="search" placeholder="slack:T1:U1"`)
		d.attr("value", q)
		d.raw(`>
<button type="submit">Search</button>
</form>
<p>Users who used the model this month (UTC), most tokens first. Who may talk to Talon is set per platform in the configuration (allowed and denied users and channels).</p>
`)
		if len(list) == 0 {
			d.raw(`<p>None.</p>`)
			return
		}
		var rows [][]string
		for _, u := range list {
			id := u.Platform + ":" + u.Workspace + ":" + u.User
			admin := b.Admins[id]
			rows = append(rows, []string{id, u.LastDay.Format("2006-01-02"), against(u.Today, b.UserDaily, admin), against(u.Month, b.UserMonthly, admin)})
		}
		d.table([]string{"User", "Last active (UTC day)", "Tokens today", "Tokens this month"}, nil, rows)
		if total > len(list) {
			d.raw(`<p>The `)
			d.text(strconv.Itoa(len(list)))
			d.raw(` who used most, of `)
			d.text(strconv.Itoa(total))
			d.raw(`; search to find others.</p>`)
		}
	})
}
