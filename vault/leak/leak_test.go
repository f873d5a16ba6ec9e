package leak

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math/bits"
	"math/rand/v2"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Test tokens are generated, never written out literally, so this file
// holds no string that secret scanners would flag.

const (
	alnum  = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b64u   = alnum + "-_"
	upDig  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
	lowers = "abcdefghijklmnopqrstuvwxyz"
)

// rnd returns n pseudo-random characters of set; seed makes tests
// deterministic. It guarantees a digit, an upper and a lower case letter
// when set contains them and n >= 3.
func rnd(seed uint64, set string, n int) string {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = set[r.IntN(len(set))]
	}
	if n >= 3 && strings.ContainsAny(set, "A") && strings.ContainsAny(set, "a") && strings.ContainsAny(set, "0") {
		b[0], b[1], b[2] = 'Q', 'q', '7'
	}
	return string(b)
}

func b64url(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func pemBlock(label string, lines int, sep string) string {
	var b strings.Builder
	b.WriteString("-----BEGIN " + label + "-----" + sep)
	for i := range lines {
		b.WriteString(base64.StdEncoding.EncodeToString([]byte(rnd(uint64(i), alnum, 48))) + sep)
	}
	b.WriteString("-----END " + label + "-----")
	return b.String()
}

func jwtToken(header string) string {
	return b64url(header) + "." + b64url(`{"sub":"1234567890","name":"x","iat":1516239022}`) + "." + rnd(9, b64u, 43)
}

func TestPatterns(t *testing.T) {
	tests := []struct {
		name  string
		token string
		want  Kind // "" for a near miss that must not be found
	}{
		{"openai legacy", "sk-" + rnd(1, alnum, 48), KindOpenAI},
		{"openai project", "sk-proj-" + rnd(2, b64u, 120), KindOpenAI},
		{"openai too short", "sk-" + rnd(3, alnum, 20), ""},
		{"openai prose", "sk-" + strings.Repeat("lowercase-words-", 3), ""},
		{"anthropic", "sk-ant-api03-" + rnd(4, b64u, 93) + "AA", KindAnthropic},
		{"anthropic short", "sk-ant-api03-" + rnd(4, b64u, 10), ""},
		{"aws akia", "AKIA" + rnd(5, upDig, 16), KindAWSAccessKey},
		{"aws asia", "ASIA" + rnd(6, upDig, 16), KindAWSAccessKey},
		{"aws 15", "AKIA" + rnd(5, upDig, 15), ""},
		{"aws 17", "AKIA" + rnd(5, upDig, 17), ""},
		{"aws lowercase", "AKIA" + rnd(5, lowers, 16), ""},
		{"github ghp", "ghp_" + rnd(7, alnum, 36), KindGitHubClassic},
		{"github gho", "gho_" + rnd(8, alnum, 36), KindGitHubClassic},
		{"github ghu", "ghu_" + rnd(9, alnum, 36), KindGitHubClassic},
		{"github ghs", "ghs_" + rnd(10, alnum, 36), KindGitHubClassic},
		{"github ghr", "ghr_" + rnd(11, alnum, 36), KindGitHubClassic},
		{"github 35", "ghp_" + rnd(7, alnum, 35), ""},
		{"github 37", "ghp_" + rnd(7, alnum, 37), ""},
		{"github ghx", "ghx_" + rnd(7, alnum, 36), ""},
		{"github fine-grained", "github_pat_" + rnd(12, alnum, 22) + "_" + rnd(13, alnum, 59), KindGitHubFineGrained},
		{"github fine-grained short", "github_pat_" + rnd(12, alnum, 20), ""},
		{"slack bot", "xoxb-" + "123456789012-1234567890123-" + rnd(14, alnum, 24), KindSlack},
		{"slack user", "xoxp-" + "123456789012-1234567890123-1234567890123-" + rnd(15, lowers+"0123456789", 32), KindSlack},
		{"slack app", "xapp-1-A0123456789-1234567890123-" + hex.EncodeToString([]byte(rnd(16, alnum, 32))), KindSlack},
		{"slack words", "xoxb-not-a-real-token-just-words", ""},
		{"discord", b64url("123456789012345678") + "." + rnd(17, b64u, 6) + "." + rnd(18, b64u, 38), KindDiscord},
		{"discord id not numeric", b64url("12345678901234567x") + "." + rnd(17, b64u, 6) + "." + rnd(18, b64u, 38), ""},
		{"discord short hmac", b64url("123456789012345678") + "." + rnd(17, b64u, 6) + "." + rnd(18, b64u, 10), ""},
		{"google", "AIza" + rnd(19, b64u, 35), KindGoogleAPIKey},
		{"google 34", "AIza" + rnd(19, b64u, 34), ""},
		{"stripe live", "sk_live_" + rnd(20, alnum, 24), KindStripe},
		{"stripe restricted", "rk_live_" + rnd(21, alnum, 24), KindStripe},
		{"stripe test", "sk_test_" + rnd(22, alnum, 99), KindStripe},
		{"stripe publishable", "pk_live_" + rnd(23, alnum, 24), ""},
		{"stripe short", "sk_live_" + rnd(20, alnum, 10), ""},
		{"pem rsa", pemBlock("RSA PRIVATE KEY", 6, "\n"), KindPrivateKey},
		{"pem pkcs8 crlf", pemBlock("PRIVATE KEY", 4, "\r\n"), KindPrivateKey},
		{"pem openssh", pemBlock("OPENSSH PRIVATE KEY", 4, "\n"), KindPrivateKey},
		{"pem json escaped", pemBlock("PRIVATE KEY", 4, `\n`), KindPrivateKey},
		{"pem one line", pemBlock("EC PRIVATE KEY", 3, " "), KindPrivateKey},
		{"pem certificate", pemBlock("CERTIFICATE", 6, "\n"), ""},
		{"pem header only", "-----BEGIN RSA PRIVATE KEY-----\n...\n-----END RSA PRIVATE KEY-----", ""},
		{"jwt", jwtToken(`{"alg":"HS256","typ":"JWT"}`), KindJWT},
		{"jwt unsigned", b64url(`{"alg":"none"}`) + "." + b64url(`{"sub":"1234567890"}`) + ".", KindJWT},
		{"jwt without alg", jwtToken(`{"typ":"JWT","kid":"abc"}`), ""},
		{"jwt header not json", "eyJ" + rnd(24, alnum, 30) + "." + rnd(25, alnum, 30) + "." + rnd(26, alnum, 30), ""},
	}
	d := NewPatterns()
	for _, tt := range tests {
		for _, ctx := range []struct{ before, after string }{
			{"", ""},
			{"my key is ", " thanks."},
			{`{"token":"`, `"}`},
			{"?token=", "&x=1"},
		} {
			t.Run(tt.name+"/"+strings.TrimSpace(ctx.before), func(t *testing.T) {
				text := ctx.before + tt.token + ctx.after
				got := d.Scan([]byte(text))
				var want []Finding
				if tt.want != "" {
					want = []Finding{{Start: len(ctx.before), End: len(ctx.before) + len(tt.token), Kind: tt.want}}
				}
				if diff := cmp.Diff(want, got); diff != "" {
					t.Errorf("Scan (-want +got):\n%s", diff)
				}
			})
		}
	}
}

func TestBearer(t *testing.T) {
	tok := rnd(30, alnum, 40)
	tests := []struct {
		name, text string
		want       []Finding
	}{
		{"header", "Authorization: Bearer " + tok + "\r\n", []Finding{{22, 22 + len(tok), KindBearer}}},
		{"lower case", "authorization: bearer " + tok, []Finding{{22, 22 + len(tok), KindBearer}}},
		{"jwt inside bearer", "Authorization: Bearer " + jwtToken(`{"alg":"RS256"}`), []Finding{{22, 22 + len(jwtToken(`{"alg":"RS256"}`)), KindJWT}}},
		{"placeholder", "Authorization: Bearer YOUR_ACCESS_TOKEN_GOES_HERE", nil},
		{"short", "Authorization: Bearer abc123", nil},
		{"prose", "the bearer of this letter is a friend of mine", nil},
		{"not a word", "Xbearer " + tok, nil},
	}
	d := NewPatterns()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, d.Scan([]byte(tt.text))); diff != "" {
				t.Errorf("Scan (-want +got):\n%s", diff)
			}
		})
	}
}

// encodedForms returns named encodings of s as a leak would carry them.
func encodedForms(s string) map[string]string {
	forms := map[string]string{
		"raw":        s,
		"hex":        hex.EncodeToString([]byte(s)),
		"HEX":        strings.ToUpper(hex.EncodeToString([]byte(s))),
		"query":      url.QueryEscape(s),
		"path":       url.PathEscape(s),
		"b64 std":    base64.StdEncoding.EncodeToString([]byte(s)),
		"b64 raw":    base64.RawStdEncoding.EncodeToString([]byte(s)),
		"b64 url":    base64.URLEncoding.EncodeToString([]byte(s)),
		"b64 rawurl": base64.RawURLEncoding.EncodeToString([]byte(s)),
		"basic auth": base64.StdEncoding.EncodeToString([]byte("user:" + s)),
	}
	j, _ := json.Marshal(s)
	forms["json"] = string(j)
	for k := range 3 {
		stream := strings.Repeat("z", k) + s + "tail of a longer stream"
		forms["b64 stream offset "+string(rune('0'+k))] = base64.StdEncoding.EncodeToString([]byte(stream))
		forms["b64url stream offset "+string(rune('0'+k))] = base64.RawURLEncoding.EncodeToString([]byte("__" + stream))
	}
	return forms
}

func TestUserSecretEncodings(t *testing.T) {
	secrets := []string{
		rnd(40, alnum, 32),
		`p@ss w0rd/with+"chars"&=?<>`,
		string([]byte{0xff, 0xfe, 0x00, 0x01, 'a', 0x80, 0x90, 'b', 'c', 0xc3}),
		"12345678",
	}
	raw := make([][]byte, len(secrets))
	for i, s := range secrets {
		raw[i] = []byte(s)
	}
	d := New(raw)
	for si, s := range secrets {
		for name, enc := range encodedForms(s) {
			t.Run(string(rune('A'+si))+"/"+name, func(t *testing.T) {
				text := "before " + enc + " after"
				out, fs := d.Redact(text)
				if len(fs) == 0 || fs[0].Kind != KindUserSecret {
					t.Fatalf("findings = %v, want a user-secret", fs)
				}
				if again := d.Scan([]byte(out)); len(again) != 0 {
					t.Errorf("re-scan of redacted output found %v", again)
				}
				if !strings.HasPrefix(out, "before ") || !strings.HasSuffix(out, " after") && name != "basic auth" && !strings.Contains(name, "stream") {
					t.Errorf("redaction damaged the surrounding text (output length %d)", len(out))
				}
			})
		}
	}
	if got := New([][]byte{[]byte("short")}).Ignored(); got != 1 {
		t.Errorf("Ignored() = %d, want 1", got)
	}
}

func TestMergeOverlapping(t *testing.T) {
	tok := "ghp_" + rnd(7, alnum, 36)
	d := New([][]byte{[]byte("abcdefghij"), []byte("fghijklmnop"), []byte(tok)})
	tests := []struct {
		name, text string
		want       []Finding
	}{
		{"overlapping secrets", "xx abcdefghijklmnop yy", []Finding{{3, 19, KindUserSecret}}},
		{"secret that is a token", "t " + tok, []Finding{{2, 2 + len(tok), KindUserSecret}}},
		{"adjacent kept apart", "abcdefghij fghijklmnop", []Finding{{0, 10, KindUserSecret}, {11, 22, KindUserSecret}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, d.Scan([]byte(tt.text))); diff != "" {
				t.Errorf("Scan (-want +got):\n%s", diff)
			}
		})
	}
	out, _ := d.Redact("key " + tok + " end")
	if want := "key [REDACTED:user-secret] end"; out != want {
		t.Errorf("Redact = %q, want %q", out, want)
	}
}

// checkFindings fails unless fs are valid findings of text: inside it,
// non-empty, sorted and not overlapping.
func checkFindings(t *testing.T, text []byte, fs []Finding) {
	t.Helper()
	prev := 0
	for i, f := range fs {
		if f.Start < prev || f.End <= f.Start || f.End > len(text) {
			t.Fatalf("finding %d of %d is %v: out of bounds, empty or overlapping (text length %d, previous end %d)", i, len(fs), f, len(text), prev)
		}
		prev = f.End
	}
}

// TestInvalidUTF8AndEdges scans empty, tiny and invalid UTF-8 inputs and
// cut-off format prefixes. Each gives exactly the expected findings, and
// Redact changes nothing but the findings: invalid bytes around a secret
// come out as they went in.
func TestInvalidUTF8AndEdges(t *testing.T) {
	const secret = "s3cr3t-value-1234"
	d := New([][]byte{[]byte(secret)})
	invalid := string([]byte{0xff, 0xfe, 0x80})
	pem := pemBlock("PRIVATE KEY", 3, "\n")
	tests := []struct {
		name string
		in   string
		want []Finding
	}{
		{"empty", "", nil},
		{"one invalid byte", "\xff", nil},
		{"invalid UTF-8 only", strings.Repeat(invalid, 1000), nil},
		{"PEM header without a body", "-----BEGIN PRIVATE KEY-----", nil},
		{"JWT prefix cut off", "eyJ", nil},
		{"OpenAI prefix cut off", "sk-", nil},
		{"Bearer without a token", "Bearer ", nil},
		{"long run of one letter ending in an invalid byte", strings.Repeat("A", 5000) + "\xff", nil},
		{"secret between invalid bytes", invalid + secret + invalid, []Finding{{3, 3 + len(secret), KindUserSecret}}},
		{"secret cut by an invalid byte", secret[:9] + "\xff" + secret[9:], nil},
		{"secret at the very end", strings.Repeat(invalid, 10) + secret, []Finding{{30, 30 + len(secret), KindUserSecret}}},
		{"PEM blocks between invalid bytes", invalid + pem + invalid + pem, []Finding{
			{3, 3 + len(pem), KindPrivateKey}, {6 + len(pem), 6 + 2*len(pem), KindPrivateKey}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := d.Scan([]byte(tt.in))
			checkFindings(t, []byte(tt.in), fs)
			if diff := cmp.Diff(tt.want, fs); diff != "" {
				t.Errorf("Scan (-want +got):\n%s", diff)
			}
			out, rfs := d.Redact(tt.in)
			if diff := cmp.Diff(fs, rfs); diff != "" {
				t.Errorf("Redact's findings differ from Scan's (-scan +redact):\n%s", diff)
			}
			// The expected output: the input with each finding replaced.
			var want strings.Builder
			prev := 0
			for _, f := range tt.want {
				want.WriteString(tt.in[prev:f.Start] + Marker(f.Kind))
				prev = f.End
			}
			want.WriteString(tt.in[prev:])
			if out != want.String() {
				t.Errorf("Redact changed more than the findings: got %q, want %q", out, want.String())
			}
		})
	}
}

// TestPathologicalInputs scans inputs built to make a naive matcher
// quadratic (a format prefix at every word start of one long run), with the
// user's secret planted after the run. Each gives exactly the expected
// findings, so the scan neither gave up inside the run nor found what is
// not there, and scanning allocates nothing but what its findings need
// (it used to allocate nothing for a run without findings; a matcher that
// copies or retries per word start shows here). How fast they are scanned
// is measured by BenchmarkScanPathological, not asserted.
func TestPathologicalInputs(t *testing.T) {
	const secret = "s3cr3t-value-1234"
	d := New([][]byte{[]byte(secret)})
	// A JWT whose three parts are all the header {"alg":"HS256"}: 62 bytes,
	// and with its dot 63 per repetition of the unit.
	const jwtUnit = "eyJhbGciOiJIUzI1NiJ9."
	for _, tt := range []struct {
		unit string
		// jwts is the number of JWTs the run holds; the rest holds nothing.
		jwts int
	}{
		{"-M", 0}, {"-eyJ", 0}, {"sk-", 0}, {"-sk-ant-", 0}, {"-AIza", 0}, {"-github_pat_", 0},
		{"-xoxb-", 0}, {"-----", 0}, {"-----BEGIN PRIVATE KEY-----", 0}, {"Ab1+", 0},
		{jwtUnit, (256 << 10) / len(jwtUnit) / 3},
	} {
		t.Run(tt.unit, func(t *testing.T) {
			run := bytes.Repeat([]byte(tt.unit), (256<<10)/len(tt.unit))
			text := append(append(run, ' '), secret...)
			var want []Finding
			for k := range tt.jwts {
				want = append(want, Finding{Start: 63 * k, End: 63*k + 62, Kind: KindJWT})
			}
			want = append(want, Finding{Start: len(run) + 1, End: len(text), Kind: KindUserSecret})
			fs := d.Scan(text)
			checkFindings(t, text, fs)
			if len(fs) != len(want) {
				t.Fatalf("%d findings, want %d", len(fs), len(want))
			}
			if diff := cmp.Diff(want, fs); diff != "" {
				t.Errorf("Scan (-want +got):\n%s", diff)
			}
			// Each JWT decodes its header once; the slice of findings grows
			// by doubling. Nothing else may allocate.
			bound := float64(tt.jwts + 2*bits.Len(uint(len(want))) + 2)
			if got := testing.AllocsPerRun(3, func() { d.Scan(text) }); got > bound {
				t.Errorf("Scan allocated %.0f times, want at most %.0f", got, bound)
			}
		})
	}
}
