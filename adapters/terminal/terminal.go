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

	"github.com/talonhq/talon/adapters/internal/chat"
	"github.com/talonhq/talon/agent"
)

// Platform is the Principal.Platform of terminal users.
const Platform = "terminal"

// Runtime is what the terminal needs from the agent runtime.
type Runtime interface {
	Accept(ctx context.Context, in agent.Inbound) (agent.QueuedInbound, error)
	WaitIdle(ctx context.Context) error
	Decide(ctx context.Context, id agent.ApprovalID, by agent.Principal, approve bool) (agent.ApprovalState, error)
}

// MaxLine is the longest input line, in bytes, that becomes a message. A
// longer line is read past without being held in memory, and the user is
// told it was not sent.
const MaxLine = 1 << 20

// tooLongNotice is what the user reads after a line over MaxLine.
const tooLongNotice = "That message is too long (the limit is 1 MiB a line); it was not sent.\n"

// inputLine is one line of input: its text, or tooLong when it was over
// MaxLine (its text is then empty).
type inputLine struct {
	text    string
	tooLong bool
}

// question is something the runtime asks the terminal's user: the next
// input line answers it instead of becoming a message.
type question struct {
	prompt string
	secret bool             // read without echo
	answer chan<- string    // receives the line ("" at end of input)
	id     agent.ApprovalID // for an approval: Run decides it with the answer
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

	mu        sync.Mutex                           // guards Out and streamed
	streamed  map[agent.InboundID]*strings.Builder // text shown so far per inbound
	questions chan question                        // created by init
	initOnce  sync.Once
}

var (
	_ agent.Channel        = (*Adapter)(nil)
	_ agent.Streamer       = (*Adapter)(nil)
	_ agent.Asker          = (*Adapter)(nil)
	_ agent.SecretPrompter = (*Adapter)(nil)
)

func (a *Adapter) init() {
	a.initOnce.Do(func() { a.questions = make(chan question) })
}

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

// Run reads lines until EOF or ctx ends. Each line is a message; Run waits
// for its answer before reading the next, and meanwhile a question from the
// runtime (an approval, a secret) is answered by the next line. At EOF it
// waits until every message has been answered, then returns nil.
func (a *Adapter) Run(ctx context.Context) error {
	if a.In == nil || a.Out == nil || a.Runtime == nil {
		return errors.New("terminal: In, Out and Runtime are required")
	}
	a.init()
	var nonce [6]byte
	_, _ = rand.Read(nonce[:])
	run := hex.EncodeToString(nonce[:])

	lines := make(chan inputLine)
	readErr := make(chan error, 1)
	go func() {
		defer close(lines)
		br := bufio.NewReaderSize(a.In, 64*1024)
		for {
			l, err := readLine(br, MaxLine)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				readErr <- err
				return
			}
			select {
			case lines <- l:
			case <-ctx.Done():
				return
			}
		}
	}()

	n := 0
	for {
		if a.Interactive {
			a.write("you> ")
		}
		var l inputLine
		var ok bool
		select {
		case l, ok = <-lines:
		case q := <-a.questions:
			a.ask(ctx, q, lines)
			continue
		case <-ctx.Done():
			return nil
		}
		if !ok {
			break
		}
		if l.tooLong {
			a.write(tooLongNotice)
			continue
		}
		if strings.TrimSpace(l.text) == "" {
			continue
		}
		n++
		in := agent.Inbound{
			DedupeKey: "terminal:" + run + ":" + strconv.Itoa(n),
			Key:       a.Key(),
			Text:      l.text,
		}
		if _, err := a.Runtime.Accept(ctx, in); err != nil && !errors.Is(err, agent.ErrDuplicate) {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, agent.ErrStopping) {
				a.write("(Talon is stopping, so that message was not taken; send it again after the restart.)\n")
				return nil
			}
			return fmt.Errorf("terminal: accept: %w", err)
		}
		if !a.waitAnswered(ctx, lines) {
			return nil
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
	a.waitAnswered(ctx, lines)
	return nil
}

// waitAnswered waits until the runtime is idle, answering its questions
// with input lines meanwhile. It reports false when ctx ended.
func (a *Adapter) waitAnswered(ctx context.Context, lines <-chan inputLine) bool {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	idle := make(chan struct{})
	go func() {
		defer close(idle)
		_ = a.Runtime.WaitIdle(wctx)
	}()
	for {
		select {
		case <-idle:
			return ctx.Err() == nil
		case q := <-a.questions:
			a.ask(ctx, q, lines)
		case <-ctx.Done():
			<-idle
			return false
		}
	}
}

// ask shows a question and answers it with the next input line. A line
// over MaxLine answers it as an empty line would (no value, not approved).
func (a *Adapter) ask(ctx context.Context, q question, lines <-chan inputLine) {
	a.write(q.prompt)
	restore := func() {}
	if q.secret && a.Interactive {
		restore = echoOff(a.In)
	}
	var l inputLine
	select {
	case l = <-lines:
	case <-ctx.Done():
	}
	restore()
	if q.secret {
		a.write("\n")
	}
	if l.tooLong {
		a.write(tooLongNotice)
	}
	line := l.text
	if q.answer != nil {
		q.answer <- line
		return
	}
	yes := strings.EqualFold(strings.TrimSpace(line), "y") || strings.EqualFold(strings.TrimSpace(line), "yes")
	if _, err := a.Runtime.Decide(ctx, q.id, a.Key().Principal, yes); err != nil && !errors.Is(err, agent.ErrDecided) {
		a.write("could not record the answer: " + err.Error() + "\n")
	}
}

// AskApproval implements agent.Asker: the next input line answers it. The
// prompt is plain text: what the tool wants (the request, or the call's
// arguments as the runtime bounded and redacted them), then the question.
func (a *Adapter) AskApproval(ctx context.Context, p agent.ApprovalPrompt) (string, error) {
	a.init()
	q := question{id: p.ID, prompt: "\n" + approvalText(chat.PromptOf(p)) + "Allow it? [y/N] "}
	// The question is handed over asynchronously: the runtime waits for
	// Decide, not for this call.
	go func() {
		select {
		case a.questions <- q:
		case <-ctx.Done():
		}
	}()
	return "", nil
}

// approvalText says what p asks, one fact a line.
func approvalText(p chat.Prompt) string {
	switch {
	case p.Request != "" && p.Reason != "":
		s := fmt.Sprintf("The tool %s wants to send data out:\n  %s\n  The URL is %d bytes long", p.Tool, p.Request, p.URLBytes)
		if p.BodyBytes > 0 {
			s += fmt.Sprintf(", with a body of %d bytes (not shown)", p.BodyBytes)
		}
		return s + ".\n  Asked because " + p.Reason + ".\n"
	case p.Request != "":
		return fmt.Sprintf("The tool %s wants to send this request:\n  %s\n", p.Tool, p.Request)
	case p.Args != "" || p.ArgsOmitted > 0:
		s := fmt.Sprintf("The tool %s wants to run with these arguments:\n  %s\n", p.Tool, p.Args)
		if p.ArgsOmitted > 0 {
			s += "  " + chat.More(p.ArgsOmitted) + "\n"
		}
		return s
	}
	return fmt.Sprintf("The tool %s wants to: %s\n", p.Tool, p.Description)
}

// ApprovalDone implements agent.Asker.
func (a *Adapter) ApprovalDone(_ context.Context, p agent.ApprovalPrompt, st agent.ApprovalState, _ agent.Principal) error {
	if st == agent.ApprovalExpired {
		a.write(fmt.Sprintf("(the approval for %s expired, so it was denied)\n", p.Tool))
	}
	return nil
}

// PromptSecret implements agent.SecretPrompter: the next input line is the
// value, read without echo on a terminal. It never becomes a message.
func (a *Adapter) PromptSecret(ctx context.Context, _ agent.SessionKey, label string) ([]byte, error) {
	a.init()
	ans := make(chan string, 1)
	q := question{prompt: label + ": ", secret: true, answer: ans}
	select {
	case a.questions <- q:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	select {
	case v := <-ans:
		if v == "" {
			return nil, errors.New("terminal: no value entered")
		}
		return []byte(v), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
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
	case shown != "" && strings.HasSuffix(r.Text, shown):
		// The reply adds a note before what was streamed: show just that.
		_, err = io.WriteString(a.Out, "\n"+strings.TrimSpace(strings.TrimSuffix(r.Text, shown))+"\n")
	case shown != "":
		_, err = io.WriteString(a.Out, "\n"+r.Text+"\n")
	case a.Interactive:
		_, err = io.WriteString(a.Out, "talon> "+r.Text+"\n")
	default:
		_, err = io.WriteString(a.Out, r.Text+"\n")
	}
	for _, f := range r.Files {
		if err == nil {
			_, err = fmt.Fprintf(a.Out, "[a tool's file %s (%d bytes): the terminal does not show files]\n", f.Name, len(f.Data))
		}
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

// readLine reads the next line from br without its line ending ("\n" or
// "\r\n"). A line of more than max bytes is consumed to its end but not
// kept: readLine holds at most max plus br's buffer in memory, however long
// the line, and returns it as tooLong. The last line may lack a newline; at
// the end of input readLine returns io.EOF.
func readLine(br *bufio.Reader, max int) (inputLine, error) {
	var buf []byte
	tooLong, read := false, false
	for {
		chunk, err := br.ReadSlice('\n')
		read = read || len(chunk) > 0
		if !tooLong {
			// max+2 leaves room for the line ending, trimmed below.
			if len(buf)+len(chunk) > max+2 {
				tooLong, buf = true, nil
			} else {
				buf = append(buf, chunk...)
			}
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if !read {
				return inputLine{}, io.EOF
			}
		case err != nil:
			return inputLine{}, err
		}
		if tooLong {
			return inputLine{tooLong: true}, nil
		}
		s := strings.TrimSuffix(strings.TrimSuffix(string(buf), "\n"), "\r")
		if len(s) > max {
			return inputLine{tooLong: true}, nil
		}
		return inputLine{text: s}, nil
	}
}

// ShowStatus implements agent.Statuser with a status line: "… 40% —
// indexing".
func (a *Adapter) ShowStatus(_ context.Context, _ agent.SessionKey, _ string, text string) error {
	a.write("… " + text + "\n")
	return nil
}

// NoticePrivately implements agent.Noticer: the terminal has one user.
func (a *Adapter) NoticePrivately(_ context.Context, _ agent.SessionKey, _ string, n agent.Notice) error {
	a.write(n.Text + "\n")
	return nil
}

var _ agent.Statuser = (*Adapter)(nil)
