package console

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
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
	denied, err := s.Store.DeniedPrincipals(r.Context())
	if err != nil {
		s.fail(w, r, err)
		return
	}
	isDenied := make(map[string]bool, len(denied))
	for _, dp := range denied {
		isDenied[dp.Principal.String()] = true
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
		if msg := r.URL.Query().Get("done"); msg != "" {
			d.raw(`<p class="notice" role="status">`)
			d.text(msg)
			d.raw(`</p>`)
		}
		d.raw(`<form method="get" action="/console/users" class="filters">
<label for="q">User</label><input id="q" name="q" type="search" placeholder="slack:T1:U1"`)
		d.attr("value", q)
		d.raw(`>
<button type="submit">Search</button>
</form>
<p>Users who used the model this month (UTC), most tokens first. Who may talk to Talon at all is set per platform in the configuration; a user denied here (or with <code>talon user deny</code>) is refused without the model, at once.</p>
`)
		if len(list) == 0 {
			d.raw(`<p>None.</p>`)
		} else {
			d.raw(`<div class="scroll"><table><thead><tr><th scope="col">User</th><th scope="col">Last active (UTC day)</th><th scope="col">Tokens today</th><th scope="col">Tokens this month</th><th scope="col">Access</th></tr></thead><tbody>`)
			for _, u := range list {
				id := u.Platform + ":" + u.Workspace + ":" + u.User
				admin := b.Admins[id]
				d.raw(`<tr><td>`)
				d.text(id)
				d.raw(`</td><td>`)
				d.text(u.LastDay.Format("2006-01-02"))
				d.raw(`</td><td>`)
				d.text(against(u.Today, b.UserDaily, admin))
				d.raw(`</td><td>`)
				d.text(against(u.Month, b.UserMonthly, admin))
				d.raw(`</td><td>`)
				accessForm(d, sess.csrf, id, isDenied[id])
				d.raw(`</td></tr>`)
			}
			d.raw(`</tbody></table></div>`)
			if total > len(list) {
				d.raw(`<p>The `)
				d.text(strconv.Itoa(len(list)))
				d.raw(` who used most, of `)
				d.text(strconv.Itoa(total))
				d.raw(`; search to find others.</p>`)
			}
		}
		d.raw(`<section aria-labelledby="denied"><h2 id="denied">Denied</h2>
`)
		if len(denied) == 0 {
			d.raw(`<p>No one.</p>`)
		} else {
			d.raw(`<div class="scroll"><table><thead><tr><th scope="col">User</th><th scope="col">Denied (UTC)</th><th scope="col">By</th><th scope="col">Access</th></tr></thead><tbody>`)
			for _, dp := range denied {
				d.raw(`<tr><td>`)
				d.text(dp.Principal.String())
				d.raw(`</td><td>`)
				d.text(when(dp.At))
				d.raw(`</td><td>`)
				d.text(dp.By)
				d.raw(`</td><td>`)
				accessForm(d, sess.csrf, dp.Principal.String(), true)
				d.raw(`</td></tr>`)
			}
			d.raw(`</tbody></table></div>`)
		}
		d.raw(`<form method="post" action="/console/users/access" class="filters">`)
		d.hiddenCSRF(sess.csrf)
		d.raw(`<input type="hidden" name="access" value="deny">
<label for="deny-user">Deny a user</label><input id="deny-user" name="user" placeholder="slack:T1:U1" required>
<button type="submit" class="danger">Deny</button>
</form>
</section>
`)
	})
}

// accessForm is the button that denies user, or allows them again.
func accessForm(d *doc, csrf, user string, denied bool) {
	d.raw(`<form method="post" action="/console/users/access">`)
	d.hiddenCSRF(csrf)
	d.raw(`<input type="hidden" name="user"`)
	d.attr("value", user)
	if denied {
		d.raw(`><input type="hidden" name="access" value="allow"><span class="bad">denied</span> <button type="submit"`)
		d.attr("aria-label", "Allow "+user+" again")
		d.raw(`>Allow</button></form>`)
		return
	}
	d.raw(`><input type="hidden" name="access" value="deny"><button type="submit" class="danger"`)
	d.attr("aria-label", "Deny "+user)
	d.raw(`>Deny</button></form>`)
}

// setAccess denies a user or allows them again through the store's
// SetDenied, the service talon user uses, which audits the change.
func (s *Server) setAccess(w http.ResponseWriter, r *http.Request, sess *session) {
	deny := formValue(w, r, "access") == "deny"
	if a := formValue(w, r, "access"); a != "deny" && a != "allow" {
		http.Error(w, "access must be deny or allow", http.StatusBadRequest)
		return
	}
	p, err := agent.ParsePrincipal(strings.TrimSpace(formValue(w, r, "user")))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	p, _ = store.GlobalPrincipal(p)
	changed, err := s.Store.SetDenied(r.Context(), p, deny, store.ConsoleAction{At: s.Now(), Actor: sess.who, Remote: s.clientAddr(r)})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var msg string
	switch {
	case deny && changed:
		msg = "Denied " + p.String() + ": their messages are refused from now on."
	case deny:
		msg = p.String() + " was already denied."
	case changed:
		msg = "Allowed " + p.String() + " again."
	default:
		msg = p.String() + " was not denied."
	}
	http.Redirect(w, r, "/console/users?"+url.Values{"done": {msg}}.Encode(), http.StatusSeeOther)
}
