package console

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/talonhq/talon/store"
)

// Tool is a sandboxed tool as its manifest grants it.
type Tool struct {
	Name, Description string
	Enabled           bool
	// Hosts it may reach, Credentials it may have injected, and its
	// approval policy.
	Hosts, Credentials []string
	Approval           string
}

// MCPServer is a remote MCP server and its tools as last seen.
type MCPServer struct {
	Name, URL, Approval string
	Tools               []store.MCPTool
}

// toolStatDays is the period of the Tools page's call counts.
const toolStatDays = 7

func (s *Server) tools(w http.ResponseWriter, r *http.Request, sess *session) {
	ctx := r.Context()
	stats, err := s.Store.ToolStats(ctx, s.Now().Add(-toolStatDays*24*time.Hour))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	byName := map[string]store.ToolStat{}
	for _, st := range stats {
		byName[st.Name] = st
	}
	var tools []Tool
	if s.Tools != nil {
		tools = s.Tools()
	}
	var servers []MCPServer
	if s.MCP != nil {
		if servers, err = s.MCP(ctx); err != nil {
			s.fail(w, r, err)
			return
		}
	}
	callCells := func(name string) []string {
		st := byName[name]
		rate := "–"
		if st.Calls > 0 {
			rate = strconv.FormatInt(st.Errors*100/st.Calls, 10) + "%"
		}
		return []string{formatInt(st.Calls), rate, when(st.Last)}
	}
	s.render(w, http.StatusOK, page{Title: "Tools", Nav: "tools", CSRF: sess.csrf}, func(d *doc) {
		d.raw(`<section aria-labelledby="sandboxed"><h2 id="sandboxed">Sandboxed tools</h2>
<p>Calls, error rate and last call over the last 7 days.</p>
`)
		if len(tools) == 0 {
			d.raw(`<p>None.</p>`)
		} else {
			var rows [][]string
			for _, t := range tools {
				state := "enabled"
				if !t.Enabled {
					state = "disabled"
				}
				rows = append(rows, append([]string{t.Name, state, strings.Join(t.Hosts, ", "), strings.Join(t.Credentials, ", "), t.Approval}, callCells(t.Name)...))
			}
			d.table([]string{"Tool", "State", "Hosts", "Credentials", "Approval", "Calls", "Errors", "Last call (UTC)"}, map[int]bool{5: true, 6: true}, rows)
		}
		d.raw(`</section>
<section aria-labelledby="mcp"><h2 id="mcp">MCP servers</h2>
`)
		if len(servers) == 0 {
			d.raw(`<p>No MCP server is configured.</p>`)
		}
		for _, sv := range servers {
			d.raw(`<h3>`)
			d.text(sv.Name)
			d.raw(`</h3><p>`)
			d.text(sv.URL + ", approval: " + sv.Approval)
			d.raw(`</p>`)
			if len(sv.Tools) == 0 {
				d.raw(`<p>No tools seen yet (<code>talon mcp test</code>).</p>`)
				continue
			}
			changed := 0
			for _, t := range sv.Tools {
				if t.Hash != t.Approved {
					changed++
				}
			}
			if changed > 0 && s.ApproveMCP != nil {
				d.raw(`<form method="post" action="/console/tools/approve">`)
				d.hiddenCSRF(sess.csrf)
				d.raw(`<input type="hidden" name="server"`)
				d.attr("value", sv.Name)
				d.raw(`><button type="submit"`)
				d.attr("aria-label", "Approve the changed tools of "+sv.Name)
				d.raw(`>Approve `)
				d.text(strconv.Itoa(changed))
				if changed == 1 {
					d.raw(` changed tool</button>`)
				} else {
					d.raw(` changed tools</button>`)
				}
				d.raw(` (read their descriptions with <code>talon mcp list</code> first; the gateway offers them from its next start)</form>`)
			}
			var rows [][]string
			for _, t := range sv.Tools {
				state := "approved"
				if t.Hash != t.Approved {
					state = "changed since approved: disabled until talon mcp approve " + sv.Name
				}
				hash := t.Hash
				if len(hash) > 12 {
					hash = hash[:12]
				}
				rows = append(rows, append([]string{t.Tool, hash, state}, callCells(sv.Name+"__"+t.Tool)...))
			}
			d.table([]string{"Tool", "Hash", "State", "Calls", "Errors", "Last call (UTC)"}, map[int]bool{3: true, 4: true}, rows)
		}
		d.raw(`</section>
`)
	})
}

// approveMCP approves a server's changed tools, audited.
func (s *Server) approveMCP(w http.ResponseWriter, r *http.Request, sess *session) {
	if s.ApproveMCP == nil {
		http.Error(w, "no MCP server is configured", http.StatusNotFound)
		return
	}
	server := formValue(w, r, "server")
	if server == "" {
		http.Error(w, "server is required", http.StatusBadRequest)
		return
	}
	n, err := s.ApproveMCP(r.Context(), server)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	s.audit(r.Context(), sess.who, "approve MCP tools", server+" ("+strconv.Itoa(n)+")", s.clientAddr(r))
	http.Redirect(w, r, "/console/tools", http.StatusSeeOther)
}
