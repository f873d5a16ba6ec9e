package console

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/talonhq/talon/vault"
)

// auditRows is how many of the vault's latest audit events are read.
const auditRows = 500

func (s *Server) credentials(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	user := q.Get("user")
	p := page{Title: "Credentials", Nav: "credentials", CSRF: sess.csrf}
	if s.Credentials == nil {
		s.render(w, http.StatusOK, p, func(d *doc) {
			d.raw(`<p>No vault is configured, so there are no credentials. See README.md, Credentials.</p>`)
		})
		return
	}
	entries, err := s.Credentials.List(r.Context(), user)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	events, err := s.Credentials.RecentAudit(r.Context(), auditRows)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.render(w, http.StatusOK, p, func(d *doc) {
		if msg := q.Get("done"); msg != "" {
			d.raw(`<p class="notice" role="status">`)
			d.text(msg)
			d.raw(`</p>`)
		}
		d.raw(`<form method="get" action="/console/credentials" class="filters">
<label for="user">User</label><input id="user" name="user" placeholder="slack:T1:U1"`)
		d.attr("value", user)
		d.raw(`>
<button type="submit">Filter</button>
</form>
<section aria-labelledby="entries"><h2 id="entries">Entries</h2>
<p>Names, hosts and how each is sent; never a value.</p>
`)
		if len(entries) == 0 {
			d.raw(`<p>None.</p>`)
		} else {
			d.raw(`<div class="scroll"><table><thead><tr><th scope="col">User</th><th scope="col">Name</th><th scope="col">Hosts</th><th scope="col">Sent as</th><th scope="col">Created (UTC)</th><th scope="col">Last used (UTC)</th><th scope="col">Action</th></tr></thead><tbody>`)
			for _, e := range entries {
				d.raw(`<tr><td>`)
				d.text(e.User)
				d.raw(`</td><td>`)
				d.text(e.Name)
				d.raw(`</td><td>`)
				d.text(strings.Join(e.Hosts, ", "))
				d.raw(`</td><td>`)
				d.text(injection(e.Injection))
				d.raw(`</td><td>`)
				d.text(when(e.CreatedAt))
				d.raw(`</td><td>`)
				d.text(when(e.LastUsed))
				d.raw(`</td><td><form method="post" action="/console/credentials/delete">`)
				d.hiddenCSRF(sess.csrf)
				d.raw(`<input type="hidden" name="user"`)
				d.attr("value", e.User)
				d.raw(`><input type="hidden" name="name"`)
				d.attr("value", e.Name)
				d.raw(`><button type="submit" class="danger"`)
				d.attr("aria-label", "Delete "+e.Name+" of "+e.User)
				d.raw(`>Delete</button></form></td></tr>`)
			}
			d.raw(`</tbody></table></div>`)
		}
		d.raw(`</section>
<section aria-labelledby="vault-audit"><h2 id="vault-audit">Use of credentials</h2>
`)
		var rows [][]string
		for _, ev := range events {
			if user != "" && ev.User != user {
				continue
			}
			allowed := "refused"
			if ev.Allowed {
				allowed = "allowed"
			}
			rows = append(rows, []string{when(ev.Time), ev.User, ev.Name, ev.Host, ev.Tool, allowed, string(ev.Reason)})
		}
		if len(rows) == 0 {
			d.raw(`<p>None.</p>`)
		} else {
			d.table([]string{"When (UTC)", "User", "Name", "Host", "Tool", "Result", "Reason"}, nil, rows)
			d.raw(`<p>The latest `)
			d.text(strconv.Itoa(auditRows))
			d.raw(` events; <code>talon vault audit</code> has all.</p>`)
		}
		d.raw(`</section>
`)
	})
}

// deleteCredential removes one entry through the vault service, audited in
// the console's log.
func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.Credentials == nil {
		http.Error(w, "no vault is configured", http.StatusNotFound)
		return
	}
	user, name := formValue(w, r, "user"), formValue(w, r, "name")
	if user == "" || name == "" {
		http.Error(w, "user and name are required", http.StatusBadRequest)
		return
	}
	err := s.Credentials.Remove(r.Context(), user, name)
	if errors.Is(err, vault.ErrNotFound) {
		http.Error(w, "no such credential (already deleted?)", http.StatusNotFound)
		return
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r.Context(), sess.who, "delete credential", user+" "+name, s.clientAddr(r))
	http.Redirect(w, r, "/console/credentials?"+url.Values{"done": {"Deleted " + name + " of " + user + "."}}.Encode(), http.StatusSeeOther)
}

// injection describes how an entry is sent, without its value.
func injection(in vault.Injection) string {
	out := string(in.Kind)
	switch {
	case in.Name != "" && in.Prefix != "":
		out += " " + in.Name + " (" + strings.TrimSpace(in.Prefix) + ")"
	case in.Name != "":
		out += " " + in.Name
	case in.Username != "":
		out += " as " + in.Username
	}
	return out
}
