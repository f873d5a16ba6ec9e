package agent

import (
	"context"
	"errors"
	"time"
)

// ApprovalState is where an approval stands. Only pending changes, once.
type ApprovalState string

// The states of an approval.
const (
	ApprovalPending  ApprovalState = "pending"
	ApprovalApproved ApprovalState = "approved"
	ApprovalDenied   ApprovalState = "denied"
	ApprovalExpired  ApprovalState = "expired"
)

// ApprovalPrompt is what a channel shows a session's owner when a tool call
// needs their approval. Description names the action in one line ("POST
// https://api.github.com/repos/o/r/issues", "run tool deploy"); Detail
// says it in full. Neither carries a secret the Redactor knows: the
// runtime redacts and bounds them before any channel sees them, so every
// channel shows the same thing. A channel still escapes them for its
// platform: they are written by the model or a tool, which may be hostile.
type ApprovalPrompt struct {
	ID          ApprovalID
	Key         SessionKey
	ReplyTo     string
	Tool        string
	Description string
	Detail      ApprovalDetail
	ExpiresAt   time.Time
	// Message is the platform message that shows this prompt, as the
	// channel's AskApproval returned it (possibly in a previous process),
	// or "" when none was posted.
	Message string
}

// ApprovalDetail is what a call or request that needs approval would do.
// For one HTTP request of a call, Method, Host and Path are set; for a
// whole call, Args.
type ApprovalDetail struct {
	// Method is the request's HTTP method ("POST").
	Method string
	// Host is the request's host, with its port when the URL names one.
	Host string
	// Path is the request's path; of its query only the names are shown
	// ("/search?q=…"), never the values or the URL's user info.
	Path string
	// Args are the call's arguments as compact JSON, redacted, cut to at
	// most MaxApprovalArgs bytes.
	Args string
	// ArgsOmitted is how many bytes of the arguments were cut.
	ArgsOmitted int
	// Reason, for a request asked because its turn read untrusted content
	// (Runtime.Taint), says so and why the request is not let through
	// ("this conversation read content from tool http_fetch: evil.example;
	// it goes to evil.example, which is not a trusted host"). Path is then
	// the whole path and query, values included (they are the data that
	// would leave), redacted and cut; URLBytes is the whole URL's length
	// and BodyBytes the body's, in bytes.
	Reason    string
	URLBytes  int
	BodyBytes int
}

// MaxApprovalArgs bounds, in bytes, the arguments an approval prompt
// shows; a channel may show fewer when its platform needs room.
const MaxApprovalArgs = 1000

// Asker is a Channel that can ask a session's owner to approve a tool call
// (a y/n prompt, Approve and Deny buttons). The owner's answer comes back
// through Runtime.Decide.
type Asker interface {
	// AskApproval shows the prompt to p.Key's principal and returns the
	// platform message that shows it ("" when there is none to keep), which
	// the runtime stores with the approval. When p.Message is set, that
	// message was posted before (by a process that has since restarted):
	// the channel shows the prompt there again, live, rather than posting
	// a second one, and returns another message only when that one is gone.
	AskApproval(ctx context.Context, p ApprovalPrompt) (message string, err error)
	// ApprovalDone tells the channel the outcome, so it can replace the
	// buttons of p.Message with it. by is the zero Principal for an expiry.
	ApprovalDone(ctx context.Context, p ApprovalPrompt, state ApprovalState, by Principal) error
}

// Errors of Runtime.Decide.
var (
	// ErrNotOwner: only the session's owner may decide its approvals.
	ErrNotOwner = errors.New("agent: only the person who started this conversation can decide")
	// ErrDecided: the approval was decided (or expired) already.
	ErrDecided = errors.New("agent: this approval was already decided")
	// ErrUnknownApproval: no approval has this id.
	ErrUnknownApproval = errors.New("agent: unknown approval")
)

// SecretInfo describes a user's vault entry without its value.
type SecretInfo struct {
	Name  string
	Hosts []string
	// Injection says how the value is sent: "bearer", "header X-Api-Key",
	// "query key", "basic alice".
	Injection string
	CreatedAt time.Time
	LastUsed  time.Time
}

// NewSecret is a secret a user entered through a secure input (a modal, a
// prompt without echo). It never passes through a message or the model.
type NewSecret struct {
	Name  string
	Value []byte
	Hosts []string
	// Injection is "bearer", "header:NAME", "header:NAME:PREFIX",
	// "query:NAME" or "basic:USERNAME"; "" means bearer.
	Injection string
}

// Secrets is the vault as channels and commands see it: names can be
// listed and values stored or removed, never read.
type Secrets interface {
	ListSecrets(ctx context.Context, p Principal) ([]SecretInfo, error)
	AddSecret(ctx context.Context, p Principal, s NewSecret) error
	RemoveSecret(ctx context.Context, p Principal, name string) error
}

// SecretPrompter is a Channel that can collect a secret value from a user
// without it becoming a message (the terminal reads it without echo).
type SecretPrompter interface {
	// PromptSecret asks key's principal for the value described by label
	// and returns it.
	PromptSecret(ctx context.Context, key SessionKey, label string) ([]byte, error)
}

// Redactor finds secrets in text: the principal's own vault values (and
// their encodings) and well-known token formats. vault/leak implements it
// (wired by cmd).
type Redactor interface {
	// Redact returns text with every finding replaced by a marker, and the
	// number of findings.
	Redact(ctx context.Context, p Principal, text string) (string, int)
}

// Typer is a Channel that can show that a turn is being worked on (Slack's
// assistant status, Discord's typing indicator).
type Typer interface {
	// Working shows the indicator for the turn answering inbound in key's
	// conversation until stop is called.
	Working(ctx context.Context, key SessionKey, replyTo string) (stop func())
}

// Noticer is a Channel that can show one person a message nobody else in
// the conversation sees (Slack's ephemeral messages; Discord's ephemeral
// follow-ups, or a DM; the terminal, which has one user). Connect links go
// only this way.
type Noticer interface {
	// NoticePrivately shows n.Text to key's principal only, in the
	// conversation replyTo names, or where only they see it (a DM); in
	// the latter case the conversation may be told n.Public.
	NoticePrivately(ctx context.Context, key SessionKey, replyTo string, n Notice) error
}

// Notice is a message for one person only.
type Notice struct {
	// Text is for that person alone (it may hold a connect link).
	Text string
	// Public is what the conversation is told when Text had to go
	// elsewhere (a Discord DM, for a message in a server channel): "I've
	// sent you a private link to connect linear." It never holds a secret
	// or a link; "" says nothing.
	Public string
}

// ConnectionInfo is one of a user's connected accounts (an MCP server with
// auth: oauth).
type ConnectionInfo struct {
	Server      string
	ConnectedAt time.Time
	ExpiresAt   time.Time
}

// Connector connects users' own accounts of remote tools (MCP servers with
// auth: oauth). cmd wires the MCP client's flow.
type Connector interface {
	// ConnectLink returns a one-time link for p to connect server.
	ConnectLink(ctx context.Context, p Principal, server string) (string, error)
	// Disconnect revokes and deletes p's connection to server and says
	// what it did, in a sentence for p.
	Disconnect(ctx context.Context, p Principal, server string) (string, error)
	// Connections lists p's connections, and the servers p could connect.
	Connections(ctx context.Context, p Principal) (connected []ConnectionInfo, available []string, err error)
}
