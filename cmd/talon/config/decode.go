package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// decode reads a configuration file's contents over Default, expanding
// ${NAME} references with getenv, and validates the result.
//
// It runs in two passes over the parsed tree. The first walks the tree
// alongside the Config type: it reports unknown and duplicate keys, values of
// the wrong shape or type, and references to unset variables, each with its
// full key path and line, and it expands references in place, on the decoded
// scalars (never on the file's text). The second re-encodes the expanded tree
// and decodes it with yaml's strict decoder (KnownFields), whose result is
// the one returned, so a field type the walk does not understand fails closed.
//
// A reference may stand unquoted in a flow collection too
// ({url: ${DATABASE_URL}}, as the README writes it), where YAML alone would
// end the value at its braces: a file that does not parse is parsed again
// with the references' "${" and "}" replaced by characters a plain value
// may hold, and put back in the tree before the walk. Only the references'
// syntax is touched, never a value.
func decode(data []byte, getenv func(string) string) (*Config, error) {
	root, err := parse(data)
	if err != nil {
		// A reference in a flow collection, as in
		// store: {driver: postgres, url: ${DATABASE_URL}}: YAML ends a
		// plain value at "{" and "}" there, so the file does not parse as
		// written. Read it again with each reference shielded; a file
		// that parses as it is never takes this path.
		shielded, ok := shieldRefs(data)
		if !ok {
			return nil, err
		}
		r, err2 := parse(shielded)
		if err2 != nil {
			return nil, err
		}
		unshieldRefs(r)
		root = r
	}
	if root == nil { // empty, or only comments
		c := Default()
		return &c, nil
	}
	doc := root
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		doc = root.Content[0]
	}

	w := walker{getenv: getenv, lines: map[string]int{}, fromEnv: map[string]bool{}}
	c := Default()
	w.walk("", doc, reflect.ValueOf(&c).Elem())
	if len(w.errs) > 0 {
		// Report what validation finds in the values that did decode too,
		// so that one run lists every problem.
		return nil, errors.Join(append(w.errs, w.sourced(c.validate(w.fromEnv))...)...)
	}

	expanded, err := yaml.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("re-encode: %w", err)
	}
	strict := Default()
	if err := strictDecode(expanded, &strict); err != nil && !errors.Is(err, io.EOF) { // EOF: a null document
		return nil, fmt.Errorf("decode: %w", err)
	}
	// An empty map or list in the file is the same as none.
	if len(strict.LLM.Headers) == 0 {
		strict.LLM.Headers = nil
	}
	if len(strict.Sandbox.AllowPrivate) == 0 {
		strict.Sandbox.AllowPrivate = nil
	}
	if len(strict.Egress.TrustedHosts) == 0 {
		strict.Egress.TrustedHosts = nil
	}
	if len(strict.MCP.Servers) == 0 {
		strict.MCP.Servers = nil
	}
	strict.Slack.normalize()
	strict.Discord.normalize()
	if errs := strict.validate(w.fromEnv); len(errs) > 0 {
		return nil, errors.Join(w.sourced(errs)...)
	}
	return &strict, nil
}

// parse reads data's one YAML document; nil for an empty one.
func parse(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var root yaml.Node
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, fmt.Errorf("parse: %w", err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("the file must hold a single YAML document")
	}
	return &root, nil
}

// refOpen and refClose stand for the "${" and "}" of a reference while a
// file is parsed again by shieldRefs: characters YAML takes into a plain
// value anywhere, flow collections included (private use, so not in a
// configuration otherwise).
const refOpen, refClose = "\uE000", "\uE001"

// shieldRefs returns data with each ${NAME} written refOpen NAME refClose,
// and whether there was any. A "$$" (a literal "$") is left as it is, so
// "$${NAME}" stays text. It returns false for data that holds refOpen or
// refClose already.
func shieldRefs(data []byte) ([]byte, bool) {
	s := string(data)
	if strings.Contains(s, refOpen) || strings.Contains(s, refClose) {
		return nil, false
	}
	var b strings.Builder
	found := false
	for i := 0; i < len(s); {
		switch {
		case strings.HasPrefix(s[i:], "$$"):
			b.WriteString("$$")
			i += 2
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 || !validEnvName(s[i+2:i+2+end]) {
				b.WriteByte('$')
				i++
				continue
			}
			b.WriteString(refOpen + s[i+2:i+2+end] + refClose)
			i += 2 + end + 1
			found = true
		default:
			b.WriteByte(s[i])
			i++
		}
	}
	return []byte(b.String()), found
}

// unshieldRefs writes back the references shieldRefs shielded, in every
// key and value of the tree n.
func unshieldRefs(n *yaml.Node) {
	if strings.Contains(n.Value, refOpen) {
		n.Value = strings.NewReplacer(refOpen, "${", refClose, "}").Replace(n.Value)
	}
	for _, c := range n.Content {
		unshieldRefs(c)
	}
}

// strictDecode is yaml's own strict decoding of data over c.
func strictDecode(data []byte, c *Config) error {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	return dec.Decode(c)
}

var (
	secretType      = reflect.TypeFor[Secret]()
	durationType    = reflect.TypeFor[Duration]()
	unmarshalerType = reflect.TypeFor[yaml.Unmarshaler]()
)

// walker checks and expands a parsed file against the Config type, decoding
// into a Config as it goes.
type walker struct {
	getenv func(string) string
	// lines maps each key path found in the file to its line.
	lines map[string]int
	// fromEnv holds the keys whose value includes an environment variable.
	fromEnv map[string]bool
	errs    []error
}

func (w *walker) fail(key string, line int, err error) {
	if key == "" {
		key = "(top level)"
	}
	w.errs = append(w.errs, &KeyError{Key: key, Source: lineSource(line), Err: err})
}

// sourced sets the Source of validation errors to the line of their key.
func (w *walker) sourced(errs []error) []error {
	for _, err := range errs {
		var ke *KeyError
		if errors.As(err, &ke) && ke.Source == "" {
			ke.Source = lineSource(w.lines[ke.Key])
		}
	}
	return errs
}

// walk decodes n into v, whose full key path is key.
func (w *walker) walk(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind == yaml.AliasNode {
		w.fail(key, n.Line, errors.New("YAML aliases are not supported"))
		return
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		// As yaml does: null empties a map or a list and leaves any other
		// value at its default.
		if k := v.Kind(); k == reflect.Map || k == reflect.Slice {
			v.Set(reflect.Zero(v.Type()))
		}
		return
	}
	if reflect.PointerTo(v.Type()).Implements(unmarshalerType) {
		w.leaf(key, n, v)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		w.structure(key, n, v)
	case reflect.Map:
		w.dictionary(key, n, v)
	case reflect.Slice:
		w.list(key, n, v)
	default:
		w.leaf(key, n, v)
	}
}

// pairs returns the key/value pairs of a mapping node, reporting keys that
// are not strings or are repeated.
func (w *walker) pairs(key string, n *yaml.Node) [][2]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		w.fail(key, n.Line, fmt.Errorf("expected a mapping, got %s", kindName(n)))
		return nil
	}
	var out [][2]*yaml.Node
	seen := map[string]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			w.fail(key, k.Line, errors.New("keys must be strings"))
			continue
		}
		child := joinKey(key, k.Value)
		if first, dup := seen[k.Value]; dup {
			w.fail(child, k.Line, fmt.Errorf("duplicate key (first at line %d)", first))
			continue
		}
		seen[k.Value] = k.Line
		w.lines[child] = k.Line
		out = append(out, [2]*yaml.Node{k, val})
	}
	return out
}

func (w *walker) structure(key string, n *yaml.Node, v reflect.Value) {
	fields := yamlFields(v.Type())
	for _, p := range w.pairs(key, n) {
		child := joinKey(key, p[0].Value)
		i, ok := fields[p[0].Value]
		if !ok {
			w.fail(child, p[0].Line, ErrUnknownKey)
			continue
		}
		w.walk(child, p[1], v.Field(i))
	}
}

func (w *walker) dictionary(key string, n *yaml.Node, v reflect.Value) {
	pairs := w.pairs(key, n)
	if n.Kind != yaml.MappingNode {
		return
	}
	if v.Type().Key().Kind() != reflect.String {
		w.fail(key, n.Line, fmt.Errorf("unsupported map type %s", v.Type()))
		return
	}
	if v.IsNil() {
		v.Set(reflect.MakeMapWithSize(v.Type(), len(pairs)))
	}
	for _, p := range pairs {
		elem := reflect.New(v.Type().Elem()).Elem()
		w.walk(joinKey(key, p[0].Value), p[1], elem)
		v.SetMapIndex(reflect.ValueOf(p[0].Value).Convert(v.Type().Key()), elem)
	}
}

func (w *walker) list(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.SequenceNode {
		w.fail(key, n.Line, fmt.Errorf("expected a list, got %s", kindName(n)))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, elem := range n.Content {
		child := key + "[" + strconv.Itoa(i) + "]"
		w.lines[child] = elem.Line
		w.walk(child, elem, s.Index(i))
	}
	v.Set(s)
}

// leaf expands and decodes a scalar.
func (w *walker) leaf(key string, n *yaml.Node, v reflect.Value) {
	if n.Kind != yaml.ScalarNode {
		w.fail(key, n.Line, fmt.Errorf("expected a single value, got %s", kindName(n)))
		return
	}
	fromEnv := false
	if strings.Contains(n.Value, "$") && n.ShortTag() != "!!binary" {
		s, used, errs := expand(n.Value, w.getenv)
		if len(errs) > 0 {
			for _, err := range errs {
				w.fail(key, n.Line, err)
			}
			return
		}
		fromEnv = used
		w.fromEnv[key] = used
		n.Value = s
		if v.Kind() == reflect.String {
			n.Tag = "!!str" // a string stays a string whatever it now looks like
		} else {
			n.Tag, n.Style = "", 0 // resolve the expanded text as if written plainly
		}
	}
	if err := n.Decode(v.Addr().Interface()); err != nil {
		// Neither a secret nor a value from the environment is echoed.
		show := !fromEnv && v.Type() != secretType
		w.fail(key, n.Line, leafError(v.Type(), n.Value, err, show))
	}
}

func leafError(t reflect.Type, value string, err error, show bool) error {
	if t == durationType {
		if show {
			return err
		}
		return errors.New("invalid duration")
	}
	if t == reflect.TypeFor[DiscordShards]() {
		if show {
			return err
		}
		return errors.New("expected auto or a number")
	}
	var want string
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		want = "an integer"
	case reflect.Bool:
		want = "true or false"
	case reflect.Float32, reflect.Float64:
		want = "a number"
	case reflect.String:
		want = "a string"
	default:
		want = "a " + t.String()
	}
	if show {
		return fmt.Errorf("expected %s, got %q", want, value)
	}
	return fmt.Errorf("expected %s", want)
}

// expand replaces each ${NAME} in s with getenv(NAME) and each $$ with $.
// An unset or empty variable, a malformed reference and a lone $ are errors;
// the errors name variables but never contain values. used reports whether
// any variable was substituted.
func expand(s string, getenv func(string) string) (out string, used bool, errs []error) {
	var b strings.Builder
	loneDollar := false
	for i := 0; i < len(s); {
		switch {
		case s[i] != '$':
			b.WriteByte(s[i])
			i++
		case strings.HasPrefix(s[i:], "$$"):
			b.WriteByte('$')
			i += 2
		case strings.HasPrefix(s[i:], "${"):
			end := strings.IndexByte(s[i+2:], '}')
			if end < 0 {
				errs = append(errs, errors.New(`unterminated "${" (write "$$" for a literal "$")`))
				return "", false, errs
			}
			name := s[i+2 : i+2+end]
			i += 2 + end + 1
			if !validEnvName(name) {
				// The name is not shown: it may be a pasted credential.
				errs = append(errs, errors.New(`invalid environment variable name in "${...}" (want letters, digits and _)`))
				continue
			}
			v := getenv(name)
			if v == "" {
				errs = append(errs, fmt.Errorf("environment variable %s is not set", name))
				continue
			}
			b.WriteString(v)
			used = true
		default:
			if !loneDollar {
				errs = append(errs, errors.New(`"$" must start "${NAME}", or be doubled ("$$") for a literal "$"`))
				loneDollar = true
			}
			i++
		}
	}
	if len(errs) > 0 {
		return "", false, errs
	}
	return b.String(), used, nil
}

func validEnvName(name string) bool {
	if name == "" || name[0] >= '0' && name[0] <= '9' {
		return false
	}
	for _, r := range name {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}

// yamlFields maps the yaml key of each exported field of struct type t to
// its index.
func yamlFields(t reflect.Type) map[string]int {
	m := make(map[string]int, t.NumField())
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		switch name {
		case "-":
			continue
		case "":
			name = strings.ToLower(f.Name)
		}
		m[name] = i
	}
	return m
}

func joinKey(parent, child string) string {
	if parent == "" {
		return child
	}
	return parent + "." + child
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	default:
		return "a single value"
	}
}
