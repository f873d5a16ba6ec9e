package agent

import (
	"context"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

// Statuser is a Channel that can show a line of text as a running turn's
// working status (Slack's assistant thread status, a status line on the
// terminal): a tool's progress ("40% — indexing").
type Statuser interface {
	// ShowStatus shows text as the status of the turn answering in key's
	// conversation replyTo names, until the turn's Working indicator stops
	// or another status replaces it. text is one line, bounded and safe to
	// show (see ToolStatus).
	ShowStatus(ctx context.Context, key SessionKey, replyTo, text string) error
}

// Bounds of the status a tool reports.
const (
	// MaxStatusBytes caps a status line, in bytes.
	MaxStatusBytes = 100
	// StatusInterval is the least time between two statuses shown for one
	// turn; the newest text in between is shown when it has passed.
	StatusInterval = time.Second
	// statusTimeout bounds one status update on the platform.
	statusTimeout = 5 * time.Second
)

// turnStatus is the status of one running turn: the newest text not yet
// shown and the goroutine that shows it.
type turnStatus struct {
	ctx     context.Context
	cancel  context.CancelFunc
	show    func(ctx context.Context, text string) error
	onError func(error)

	mu      sync.Mutex // guards the fields below
	pending string     // newest text not yet shown; "" when none
	running bool       // the goroutine is running
	last    time.Time  // when the last status was shown
	done    chan struct{}
}

// ToolStatus shows text as the working status of turn, whose session is
// key, on channels that can (Statuser). It never blocks and never fails:
// the text is kept as the newest status and shown by the turn's own
// goroutine, at most once per StatusInterval, the newest one winning; a
// failure is logged at debug level. text is untrusted (an MCP server's
// progress message): control characters become spaces, it is cut to
// MaxStatusBytes, and mentions and links are defused (see StatusText).
// It does nothing for a turn that is not running here.
func (r *Runtime) ToolStatus(key SessionKey, turn TurnID, text string) {
	r.init()
	text = StatusText(text)
	if text == "" {
		return
	}
	r.mu.Lock()
	st := r.statuses[turn]
	r.mu.Unlock()
	if st == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.ctx.Err() != nil {
		return
	}
	st.pending = text
	if st.running {
		return
	}
	st.running = true
	st.done = make(chan struct{})
	go st.loop(st.done)
}

// loop shows the pending status, waiting StatusInterval after the last
// one, until none is pending or the turn ends.
func (st *turnStatus) loop(done chan struct{}) {
	defer close(done)
	for {
		st.mu.Lock()
		wait := time.Until(st.last.Add(StatusInterval))
		st.mu.Unlock()
		if wait > 0 && !Sleep(st.ctx, wait) {
			st.stop()
			return
		}
		st.mu.Lock()
		text := st.pending
		st.pending = ""
		if text == "" || st.ctx.Err() != nil {
			st.running = false
			st.mu.Unlock()
			return
		}
		st.last = time.Now()
		st.mu.Unlock()
		ctx, cancel := context.WithTimeout(st.ctx, statusTimeout)
		if err := st.show(ctx, text); err != nil && st.ctx.Err() == nil {
			st.onError(err)
		}
		cancel()
	}
}

func (st *turnStatus) stop() {
	st.mu.Lock()
	st.running = false
	st.mu.Unlock()
}

// startStatus prepares turn's status on ch; the returned func ends it and
// waits for a status being shown. Without a Statuser it does nothing.
func (r *Runtime) startStatus(ctx context.Context, turn TurnID, ch Channel, key SessionKey, replyTo string) (end func()) {
	s, ok := ch.(Statuser)
	if !ok {
		return func() {}
	}
	sctx, cancel := context.WithCancel(ctx)
	st := &turnStatus{ctx: sctx, cancel: cancel,
		show: func(ctx context.Context, text string) error { return s.ShowStatus(ctx, key, replyTo, text) },
		onError: func(err error) {
			r.Log.Debug().Err(err).Int64("turn", int64(turn)).Msg("a tool's status was not shown")
		},
	}
	r.mu.Lock()
	if r.statuses == nil {
		r.statuses = make(map[TurnID]*turnStatus)
	}
	r.statuses[turn] = st
	r.mu.Unlock()
	return func() {
		r.mu.Lock()
		delete(r.statuses, turn)
		r.mu.Unlock()
		st.mu.Lock()
		st.cancel()
		done := st.done
		st.mu.Unlock()
		if done != nil {
			<-done
		}
	}
}

// StatusText makes untrusted text safe to show as a status line: one line
// (control and format characters become spaces, runs of spaces one),
// valid UTF-8, no more than MaxStatusBytes, with nothing a platform would
// turn into a mention or a link: '<' and '>' (Slack's <!channel>, <@U1>,
// <https://…|…>) become ‹ and ›, '@' (Discord's @everyone, @here) the
// full-width ＠, and "://" becomes "[:]//".
func StatusText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	var b strings.Builder
	space := false
	for _, r := range s {
		switch {
		case unicode.IsControl(r) || unicode.Is(unicode.Cf, r) || unicode.IsSpace(r):
			if !space && b.Len() > 0 {
				b.WriteByte(' ')
			}
			space = true
			continue
		case r == '<':
			r = '‹'
		case r == '>':
			r = '›'
		case r == '@':
			r = '＠'
		}
		space = false
		b.WriteRune(r)
	}
	out := strings.TrimSpace(strings.ReplaceAll(b.String(), "://", "[:]//"))
	if len(out) > MaxStatusBytes {
		const mark = "…"
		cut := MaxStatusBytes - len(mark)
		for cut > 0 && !utf8.RuneStart(out[cut]) {
			cut--
		}
		out = strings.TrimSpace(out[:cut]) + mark
	}
	return out
}
