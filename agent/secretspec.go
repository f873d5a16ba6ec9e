package agent

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// How a secret is sent. This is the one parser of what people type to store
// a secret: /secret add in every channel and `talon vault set` share
// SecretFlags, and NewSecret.Injection (which the Slack and Discord forms
// fill in) is read by ParseInjection. Whether a header name, a host or a
// value is acceptable is the vault's to decide; this only reads the forms.

// The kinds of Injection.
const (
	InjectBearer = "bearer" // Authorization: Bearer VALUE
	InjectHeader = "header" // header Name: Prefix + VALUE
	InjectQuery  = "query"  // query parameter Name=VALUE
	InjectBasic  = "basic"  // HTTP basic authentication, Username and VALUE
)

// Injection is how a secret is added to a request: the parsed form of
// NewSecret.Injection. Only the fields of its Kind are set: Name and Prefix
// for a header, Name for a query parameter, Username for basic.
type Injection struct {
	Kind     string
	Name     string
	Prefix   string
	Username string
}

// SecretError is a secret refused for what a person entered: Field names
// the part at fault ("name", "value", "hosts" or "injection") and Reason
// says why in words they can act on. It never holds the value. It is what
// Secrets.AddSecret returns when the vault refuses the secret itself, so a
// channel can show Reason next to the field; other errors are failures to
// report with a reference.
type SecretError struct {
	Field  string
	Reason string
}

func (e *SecretError) Error() string { return e.Reason }

// ParseInjection reads the text form of an Injection: "" or "bearer",
// "header:NAME", "header:NAME:PREFIX" (the prefix may hold colons),
// "query:NAME" or "basic:USERNAME". Its error is a *SecretError.
func ParseInjection(s string) (Injection, error) {
	kind, rest, _ := strings.Cut(s, ":")
	bad := func(format string, a ...any) (Injection, error) {
		return Injection{}, &SecretError{Field: "injection", Reason: fmt.Sprintf(format, a...)}
	}
	switch kind {
	case "", InjectBearer:
		if rest != "" {
			return bad("%q: bearer takes nothing after it", s)
		}
		return Injection{Kind: InjectBearer}, nil
	case InjectHeader:
		name, prefix, _ := strings.Cut(rest, ":")
		if name == "" {
			return bad("%q: name the header, as in header:X-Api-Key", s)
		}
		return Injection{Kind: InjectHeader, Name: name, Prefix: prefix}, nil
	case InjectQuery:
		if rest == "" {
			return bad("%q: name the query parameter, as in query:api_key", s)
		}
		return Injection{Kind: InjectQuery, Name: rest}, nil
	case InjectBasic:
		if rest == "" {
			return bad("%q: name the user, as in basic:alice", s)
		}
		return Injection{Kind: InjectBasic, Username: rest}, nil
	}
	return bad("%q: want bearer, header:NAME[:PREFIX], query:NAME or basic:USERNAME", s)
}

// String returns the text form ParseInjection reads.
func (in Injection) String() string {
	switch in.Kind {
	case InjectHeader:
		if in.Prefix != "" {
			return InjectHeader + ":" + in.Name + ":" + in.Prefix
		}
		return InjectHeader + ":" + in.Name
	case InjectQuery:
		return InjectQuery + ":" + in.Name
	case InjectBasic:
		return InjectBasic + ":" + in.Username
	}
	return InjectBearer
}

// Describe says how the secret is sent, for listings: "bearer",
// `header X-Api-Key (prefix "Key ")`, "query key", "basic alice".
func (in Injection) Describe() string {
	switch in.Kind {
	case InjectHeader:
		if in.Prefix != "" {
			return fmt.Sprintf("header %s (prefix %q)", in.Name, in.Prefix)
		}
		return "header " + in.Name
	case InjectQuery:
		return "query " + in.Name
	case InjectBasic:
		return "basic " + in.Username
	case "":
		return InjectBearer
	}
	return in.Kind
}

// SecretFlags are the options of /secret add and `talon vault set`: the
// hosts a secret may be sent to and how it is sent. Register them on a
// FlagSet, parse, then call Injection.
type SecretFlags struct {
	// Hosts are the --host values, in order.
	Hosts []string

	bearer                       bool
	header, prefix, query, basic string
}

// Register defines --host, --bearer, --header, --prefix, --query and
// --basic on fs.
func (f *SecretFlags) Register(fs *flag.FlagSet) {
	fs.Func("host", "a host the secret may be sent to, over https: HOST means port 443 only, HOST:PORT that port only\n"+
		"(repeatable; *.example.com for its subdomains, on port 443)", func(v string) error {
		f.Hosts = append(f.Hosts, v)
		return nil
	})
	fs.BoolVar(&f.bearer, "bearer", false, "send as Authorization: Bearer VALUE (the default)")
	fs.StringVar(&f.header, "header", "", "send in this header")
	fs.StringVar(&f.prefix, "prefix", "", "with --header: text before the value")
	fs.StringVar(&f.query, "query", "", "send as this query parameter")
	fs.StringVar(&f.basic, "basic", "", "send as HTTP basic authentication with this user name")
}

// Injection returns how the parsed flags say to send the secret: bearer
// unless one of --header (with --prefix), --query or --basic was given.
// Its error is a *SecretError.
func (f *SecretFlags) Injection() (Injection, error) {
	n := 0
	for _, set := range []bool{f.bearer, f.header != "", f.query != "", f.basic != ""} {
		if set {
			n++
		}
	}
	switch {
	case n > 1:
		return Injection{}, &SecretError{Field: "injection", Reason: "give at most one of --bearer, --header, --query, --basic"}
	case f.prefix != "" && f.header == "":
		return Injection{}, &SecretError{Field: "injection", Reason: "--prefix goes with --header"}
	case f.header != "":
		return Injection{Kind: InjectHeader, Name: f.header, Prefix: f.prefix}, nil
	case f.query != "":
		return Injection{Kind: InjectQuery, Name: f.query}, nil
	case f.basic != "":
		return Injection{Kind: InjectBasic, Username: f.basic}, nil
	}
	return Injection{Kind: InjectBearer}, nil
}

// ParseSecretAdd reads the arguments of /secret add: "NAME --host HOST
// [--host HOST]... [--bearer | --header NAME [--prefix P] | --query NAME |
// --basic USER]", options before or after the name. The result has no
// Value: that is asked for privately.
func ParseSecretAdd(args []string) (NewSecret, error) {
	fs := flag.NewFlagSet("secret add", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var f SecretFlags
	f.Register(fs)
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return NewSecret{}, &SecretError{Field: "injection", Reason: "help asked for"}
			}
			return NewSecret{}, &SecretError{Field: "injection", Reason: err.Error()}
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(pos) != 1 {
		return NewSecret{}, &SecretError{Field: "name", Reason: fmt.Sprintf("give one name, not %d", len(pos))}
	}
	if len(f.Hosts) == 0 {
		return NewSecret{}, &SecretError{Field: "hosts", Reason: "name at least one host with --host"}
	}
	in, err := f.Injection()
	if err != nil {
		return NewSecret{}, err
	}
	return NewSecret{Name: pos[0], Hosts: f.Hosts, Injection: in.String()}, nil
}
