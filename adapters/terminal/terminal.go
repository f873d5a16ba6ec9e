package terminal

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"

	"github.com/talonhq/talon/agent"
)

// Platform is the Principal.Platform of terminal users.
const Platform = "terminal"

// Runtime is what the terminal needs from the agent runtime.
type Runtime interface {
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
	WaitIdle(ctx context.Context) error
}

// Adapter reads one message per line from In and writes replies to Out.
type Adapter struct {
	// In and Out are the conversation's input and output; required.
	In  io.Reader
	Out io.Writer
	// User is the terminal user's id; "" means "local".
	User string
	// Interactive shows prompts and waits for each reply before reading
	// the next line (a person at a terminal). Otherwise lines are queued as
	// fast as they come (a script) and Run returns after the last reply.
	Interactive bool
	// Runtime accepts the messages; required.
	Runtime Runtime

	mu       sync.Mutex                           // guards Out and streamed
	streamed map[agent.InboundID]*strings.Builder // text shown so far per inbound
}

var (
	_ agent.Channel  = (*Adapter)(nil)
	_ agent.Streamer = (*Adapter)(nil)
)

// Key is the session key of the terminal user.
func (a *Adapter) Key() agent.SessionKey {
	u := a.User
	if u == "" {
		u = "local"
	}
	return agent.SessionKey{Principal: agent.Principal{Platform: Platform, User: u}}
}

// Platform implements agent.Channel.
func (a *Adapter) Platform() string { return Platform }

// Run reads lines until EOF or ctx ends. At EOF it waits until every
// message has been answered, then returns nil.
func (a *Adapter) Run(ctx context.Context) error {
	if a.In == nil || a.Out == nil || a.Runtime == nil {
		return errors.New("terminal: In, Out and Runtime are required")
	}
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	run := hex.EncodeToString(nonce[:])

	lines := make(chan string)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(a.In)
		sc.Buffer(make([]byte, 64*1024), 1<<20)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			case <-ctx.Done():
				return
			}
		}
		readErr <- sc.Err()
	}()

	n := 0
	for {
		if a.Interactive {
			a.write("you> ")
		}
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-ctx.Done():
			return nil
		}
		if !ok {
			break
		}
		if strings.TrimSpace(line) == "" {
			continue
		}
		n++
		in := agent.Inbound{
			DedupeKey: "terminal:" + run + ":" + strconv.Itoa(n),
			Key:       a.Key(),
			Text:      line,
		}
		if _, err := a.Runtime.Accept(ctx, in); err != nil && !errors.Is(err, agent.ErrDuplicate) {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("terminal: accept: %w", err)
		}
		if a.Interactive {
			if err := a.Runtime.WaitIdle(ctx); err != nil {
				return nil
			}
		}
	}
	if a.Interactive {
		a.write("\n")
	}
	select {
	case err := <-readErr:
		if err != nil {
			return fmt.Errorf("terminal: read input: %w", err)
		}
	default:
	}
	if err := a.Runtime.WaitIdle(ctx); err != nil {
		return nil
	}
	return nil
}

// Stream implements agent.Streamer: it shows the answer as it arrives.
func (a *Adapter) Stream(_ context.Context, id agent.InboundID, _ agent.SessionKey, _ string, delta string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.streamed == nil {
		a.streamed = make(map[agent.InboundID]*strings.Builder)
	}
	b := a.streamed[id]
	if b == nil {
		b = &strings.Builder{}
		a.streamed[id] = b
		if a.Interactive {
			io.WriteString(a.Out, "talon> ")
		}
	}
	b.WriteString(delta)
	io.WriteString(a.Out, delta)
}

// Deliver implements agent.Channel. A reply already shown by streaming is
// only ended; anything else is printed whole.
func (a *Adapter) Deliver(_ context.Context, r agent.Reply) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	shown := ""
	if b := a.streamed[r.Inbound]; b != nil {
		shown = b.String()
		delete(a.streamed, r.Inbound)
	}
	var err error
	switch {
	case shown != "" && strings.HasSuffix(shown, r.Text):
		_, err = io.WriteString(a.Out, "\n")
	case shown != "":
		_, err = io.WriteString(a.Out, "\n"+r.Text+"\n")
	case a.Interactive:
		_, err = io.WriteString(a.Out, "talon> "+r.Text+"\n")
	default:
		_, err = io.WriteString(a.Out, r.Text+"\n")
	}
	if err != nil {
		return "", fmt.Errorf("terminal: write reply: %w", err)
	}
	return "terminal:" + strconv.FormatInt(int64(r.ID), 10), nil
}

func (a *Adapter) write(s string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	io.WriteString(a.Out, s)
}
