package console

import (
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/store"
	"github.com/talonhq/talon/vault"
)

// auditRows is how many of the vault's audit events the page shows at most.
const auditRows = 500

// auditFilter reads the audit log's filters from the query: user, name,
// host, tool, result (allowed, refused) and the UTC days from and to
// (inclusive, YYYY-MM-DD). A value that does not parse is left out and
// reported.
func auditFilter(q url.Values) (store.VaultAuditFilter, []string) {
	clip := func(s string) string {
		s = strings.TrimSpace(s)
		if len(s) > 200 {
			s = s[:200]
		}
		return s
	}
	f := store.VaultAuditFilter{User: clip(q.Get("user")), Name: clip(q.Get("name")), Host: clip(q.Get("host")), Tool: clip(q.Get("tool"))}
	var bad []string
	switch r := q.Get("result"); r {
	case "", "allowed", "refused":
		f.Result = r
	default:
		bad = append(bad, "result must be allowed or refused")
	}
	if v := q.Get("from"); v != "" {
		if d, err := time.Parse(time.DateOnly, v); err == nil {
			f.From = d
		} else {
			bad = append(bad, "from must be a day, YYYY-MM-DD")
		}
	}
	if v := q.Get("to"); v != "" {
		if d, err := time.Parse(time.DateOnly, v); err == nil {
			f.To = d.AddDate(0, 0, 1)
		} else {
			bad = append(bad, "to must be a day, YYYY-MM-DD")
		}
	}
	return f, bad
}

func (s *Server) credentials(w http.ResponseWriter, r *http.Request, sess *session) {
	q := r.URL.Query()
	af, bad := auditFilter(q)
	user := af.User
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
	events, err := s.Store.VaultAudit(r.Context(), af, auditRows)
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
		d.raw(`<form method="get" action="/console/credentials" class="filters">`)
		field := func(id, label markup, typ markup, placeholder markup, value string) {
			d.raw(`<span class="field"><label for="` + id + `">` + label + `</label><input id="` + id + `" name="` + id + `"`)
			if typ != "" {
				d.raw(` type="` + typ + `"`)
			}
			if placeholder != "" {
				d.raw(` placeholder="` + placeholder + `"`)
			}
			d.attr("value", value)
			d.raw(`></span>
`)
		}
		field("user", "User", "", "slack:T1:U1", user)
		field("name", "Entry", "", "github", af.Name)
		field("host", "Host", "", "api.github.com", af.Host)
		field("tool", "Tool", "", "", af.Tool)
		d.raw(`<span class="field"><label for="result">Result</label><select id="result" name="result">`)
		for _, o := range []struct{ v, label markup }{{"", "any"}, {"allowed", "allowed"}, {"refused", "refused"}} {
			d.raw(`<option value="` + o.v + `"`)
			if string(o.v) == af.Result {
				d.raw(` selected`)
			}
			d.raw(`>` + o.label + `</option>`)
		}
		d.raw(`</select></span>
`)
		field("from", "From", "date", "", q.Get("from"))
		field("to", "To", "date", "", q.Get("to"))
		d.raw(`<button type="submit">Filter</button>
</form>
`)
		for _, b := range bad {
			d.raw(`<p class="error" role="alert">`)
			d.text(b)
			d.raw(`; it was left out.</p>`)
		}
		d.raw(`<section aria-labelledby="entries"><h2 id="entries">Entries</h2>
<p>Names, hosts and how each is sent; never a value.</p>
`)
		if len(entries) == 0 {
			d.raw(`<p>None.</p>`)
		} else {
			d.raw(`<div class="scroll"><table><thead><tr><th scope="col">User</th><th scope="col">Name</th><th scope="col">Hosts</th><th scope="col">Sent as</th><th scope="col">Created (UTC)</th><th scope="col">Last used (UTC)</th><th scope="col">Action</th></tr></thead><tbody>`)
			for _, e := range entries {
				if af.Name != "" && e.Name != af.Name || af.Host != "" && !slices.Contains(e.Hosts, af.Host) {
					continue
				}
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
