package leak

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// Kind names what a finding is. It never contains the value.
type Kind string

// Kinds of findings.
const (
	KindUserSecret        Kind = "user-secret"
	KindPrivateKey        Kind = "private-key"
	KindOpenAI            Kind = "openai"
	KindAnthropic         Kind = "anthropic"
	KindAWSAccessKey      Kind = "aws-access-key-id"
	KindGitHubClassic     Kind = "github-classic"
	KindGitHubFineGrained Kind = "github-fine-grained"
	KindSlack             Kind = "slack"
	KindDiscord           Kind = "discord-bot"
	KindGoogleAPIKey      Kind = "google-api-key"
	KindStripe            Kind = "stripe"
	KindJWT               Kind = "jwt"
	KindBearer            Kind = "bearer-token"
)

// rank orders kinds when overlapping findings are merged: the lower rank
// names the merged finding.
func rank(k Kind) int {
	switch k {
	case KindUserSecret:
		return 0
	case KindPrivateKey:
		return 1
	case KindJWT:
		return 3
	case KindBearer:
		return 4
	default:
		return 2
	}
}

// Finding is one detected secret: the byte range [Start, End) of the
// scanned text and its kind. It never holds the value.
type Finding struct {
	Start, End int
	Kind       Kind
}

// MinSecretLen is the shortest user secret the Detector looks for. Shorter
// values would match ordinary text; New ignores them (see Ignored).
const MinSecretLen = 8

// gram is the width of the sampled probes for user secrets.
const gram = 4

// bitmapBits is log2 of the probe filter's size in bits (128 KiB).
const bitmapBits = 20

// maxStride caps the distance between probes.
const maxStride = 16

// form is one encoded form of a user secret.
type form struct {
	b []byte
	// extL and extR are how many characters of a base64 form's partially
	// determined edge characters to add to a finding when present; pad
	// allows trailing '=' padding.
	extL, extR int
	b64        *[256]bool
	pad        bool
}

type cand struct {
	form, off int32
}

// Detector finds user secrets and known token formats in text. Build one
// with New per user (or NewPatterns for patterns only) and reuse it; it is
// immutable after New and safe for concurrent use.
type Detector struct {
	forms   []form
	stride  int
	bits    []uint64
	cands   map[uint32][]cand
	ignored int
}

// NewPatterns returns a Detector for the well-known token formats only.
func NewPatterns() *Detector { return &Detector{} }

// New returns a Detector for the given secret values, their encodings and
// the well-known token formats. Values shorter than MinSecretLen bytes are
// ignored and counted by Ignored. New copies what it needs; the caller may
// wipe secrets afterwards.
func New(secrets [][]byte) *Detector {
	d := &Detector{}
	seen := map[string]bool{}
	add := func(f form) {
		if len(f.b) < MinSecretLen || seen[string(f.b)] {
			return
		}
		seen[string(f.b)] = true
		d.forms = append(d.forms, f)
	}
	for _, s := range secrets {
		if len(s) < MinSecretLen {
			d.ignored++
			continue
		}
		for _, f := range encodings(s) {
			add(f)
		}
	}
	if len(d.forms) == 0 {
		return d
	}
	minLen := len(d.forms[0].b)
	for _, f := range d.forms {
		minLen = min(minLen, len(f.b))
	}
	d.stride = min(minLen-gram+1, maxStride)
	d.bits = make([]uint64, (1<<bitmapBits)/64)
	d.cands = map[uint32][]cand{}
	for i, f := range d.forms {
		for off := 0; off < d.stride; off++ {
			x := binary.LittleEndian.Uint32(f.b[off:])
			h := hash(x)
			d.bits[h>>6] |= 1 << (h & 63)
			d.cands[x] = append(d.cands[x], cand{form: int32(i), off: int32(off)})
		}
	}
	return d
}

// Ignored returns how many secrets New ignored for being shorter than
// MinSecretLen.
func (d *Detector) Ignored() int { return d.ignored }

func hash(x uint32) uint32 { return (x * 0x9E3779B1) >> (32 - bitmapBits) }

var (
	b64Std = alphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
	b64URL = alphabet("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
)

func alphabet(s string) *[256]bool {
	var t [256]bool
	for i := 0; i < len(s); i++ {
		t[s[i]] = true
	}
	return &t
}

// encodings returns the forms of s to look for.
func encodings(s []byte) []form {
	str := string(s)
	out := []form{
		{b: bytes.Clone(s)},
		{b: []byte(hex.EncodeToString(s))},
		{b: []byte(strings.ToUpper(hex.EncodeToString(s)))},
		{b: []byte(url.QueryEscape(str))},
		{b: []byte(url.PathEscape(str))},
	}
	for _, html := range []bool{true, false} {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(html)
		if enc.Encode(str) == nil {
			j := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
			out = append(out, form{b: bytes.Clone(j[1 : len(j)-1])})
		}
	}
	// Base64 at the three alignments a value can have inside a longer
	// stream: keep only the characters fully determined by the value, and
	// let findings extend over the partially determined edges.
	n := len(s)
	for _, alpha := range []struct {
		enc *base64.Encoding
		tab *[256]bool
	}{{base64.RawStdEncoding, b64Std}, {base64.RawURLEncoding, b64URL}} {
		for k := range 3 {
			buf := make([]byte, k+n)
			copy(buf[k:], s)
			e := alpha.enc.EncodeToString(buf)
			lo, hi := (8*k+5)/6, 8*(k+n)/6
			out = append(out, form{
				b:    []byte(e[lo:hi]),
				extL: lo - 8*k/6, extR: (8*(k+n)+5)/6 - hi,
				b64: alpha.tab, pad: true,
			})
		}
	}
	return out
}

// Scan returns the secrets found in text, sorted by Start, with
// overlapping findings merged. It never panics, whatever the input.
func (d *Detector) Scan(text []byte) []Finding {
	var fs []Finding
	if len(d.forms) > 0 {
		fs = d.scanSecrets(text, fs)
	}
	fs = scanPatterns(text, fs)
	return merge(fs)
}

func (d *Detector) scanSecrets(text []byte, fs []Finding) []Finding {
	n := len(text)
	bits := d.bits
	for q := 0; q+gram <= n; q += d.stride {
		x := binary.LittleEndian.Uint32(text[q:])
		h := hash(x)
		if bits[h>>6]&(1<<(h&63)) == 0 {
			continue
		}
		for _, c := range d.cands[x] {
			f := &d.forms[c.form]
			p := q - int(c.off)
			if p < 0 || p+len(f.b) > n || !bytes.Equal(text[p:p+len(f.b)], f.b) {
				continue
			}
			start, end := p, p+len(f.b)
			if f.b64 != nil {
				if f.extL > 0 && start > 0 && f.b64[text[start-1]] {
					start--
				}
				if f.extR > 0 && end < n && f.b64[text[end]] {
					end++
				}
				for i := 0; i < 2 && end < n && text[end] == '='; i++ {
					end++
				}
			}
			fs = append(fs, Finding{Start: start, End: end, Kind: KindUserSecret})
		}
	}
	return fs
}

// merge sorts findings and merges overlapping ones, keeping the kind of
// the lowest rank.
func merge(fs []Finding) []Finding {
	if len(fs) < 2 {
		return fs
	}
	slices.SortFunc(fs, func(a, b Finding) int {
		if a.Start != b.Start {
			return a.Start - b.Start
		}
		return b.End - a.End
	})
	out := fs[:1]
	for _, f := range fs[1:] {
		last := &out[len(out)-1]
		if f.Start < last.End {
			last.End = max(last.End, f.End)
			if rank(f.Kind) < rank(last.Kind) {
				last.Kind = f.Kind
			}
			continue
		}
		out = append(out, f)
	}
	return out
}

// Redact returns text with every finding replaced by "[REDACTED:kind]",
// and the findings (offsets into the original text).
func (d *Detector) Redact(text string) (string, []Finding) {
	fs := d.Scan([]byte(text))
	if len(fs) == 0 {
		return text, nil
	}
	var b strings.Builder
	b.Grow(len(text))
	prev := 0
	for _, f := range fs {
		b.WriteString(text[prev:f.Start])
		b.WriteString(Marker(f.Kind))
		prev = f.End
	}
	b.WriteString(text[prev:])
	return b.String(), fs
}

// Marker returns the text that replaces a finding of kind k.
func Marker(k Kind) string { return "[REDACTED:" + string(k) + "]" }
