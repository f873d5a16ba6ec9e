package leak

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
)

// Token-format detection. Every supported format is, or contains, a run of
// at least minRun bytes of runClass. Runs are found by sampling every
// runStride bytes: a run of minRun bytes always contains two consecutive
// samples with only run bytes between them, so most text is rejected after
// one or two table lookups per sample. Only inside long runs are the
// formats checked, at word starts, by small hand-written matchers.

const (
	minRun    = 20
	runStride = minRun / 2
)

// Character classes.
const (
	cRun   = 1 << iota // may be part of a token run
	cAlnum             // [A-Za-z0-9]
	cB64U              // base64url alphabet [A-Za-z0-9_-]
	cB64S              // standard base64 alphabet and padding [A-Za-z0-9+/=]
	cUpper
	cLower
	cDigit
)

var class = func() [256]uint8 {
	var t [256]uint8
	for c := 0; c < 256; c++ {
		var v uint8
		switch {
		case 'A' <= c && c <= 'Z':
			v = cRun | cAlnum | cB64U | cB64S | cUpper
		case 'a' <= c && c <= 'z':
			v = cRun | cAlnum | cB64U | cB64S | cLower
		case '0' <= c && c <= '9':
			v = cRun | cAlnum | cB64U | cB64S | cDigit
		case c == '-' || c == '_':
			v = cRun | cB64U
		case c == '+' || c == '/' || c == '=':
			v = cRun | cB64S
		case c == '.' || c == '~':
			v = cRun
		}
		t[c] = v
	}
	return t
}()

// scanPatterns appends findings of well-known token formats.
func scanPatterns(text []byte, fs []Finding) []Finding {
	n := len(text)
	cls := &class
	for q := 0; q+runStride < n; q += runStride {
		w := text[q : q+runStride+1 : q+runStride+1]
		if cls[w[runStride]]&cRun == 0 {
			q += runStride // no run contains the next sample either
			continue
		}
		if cls[w[0]]&cRun == 0 {
			continue
		}
		j := runStride - 1
		for j > 0 && cls[w[j]]&cRun != 0 {
			j--
		}
		if j > 0 {
			continue
		}
		a, b := q, q+runStride+1
		for a > 0 && class[text[a-1]]&cRun != 0 {
			a--
		}
		for b < n && class[text[b]]&cRun != 0 {
			b++
		}
		var resume int
		fs, resume = analyseRun(text, a, b, fs)
		q = max(b, resume) / runStride * runStride
	}
	return fs
}

// analyseRun checks the run text[a:b] for token formats and returns the
// findings and the offset scanning may resume at. Its work is linear in
// the run's length: a failed attempt of one family of formats records how
// far it looked, and later starts of that family inside that stretch are
// skipped (their bodies would be suffixes of one already refused).
func analyseRun(text []byte, a, b int, fs []Finding) ([]Finding, int) {
	resume := b
	if b-a < minRun {
		return fs, resume
	}
	found := false
	var skip [7]int
	for i := a; i < b; i++ {
		if i > a && class[text[i-1]]&cAlnum != 0 {
			continue
		}
		f := family(text[i])
		if f < 0 || i < skip[f] {
			continue
		}
		end, kind, scanned := matchAt(text, i, b)
		if end > i {
			fs = append(fs, Finding{Start: i, End: end, Kind: kind})
			found = true
			resume = max(resume, end)
			i = end - 1
			continue
		}
		skip[f] = scanned
	}
	if !found {
		var s, e int
		var ok bool
		if k := bytes.Index(text[a:b], []byte("-----")); k >= 0 {
			s, e, ok = pemAround(text, a+k, b)
		} else if b-a >= 40 && a > 0 && isMixed(text[a:b], cB64S) {
			s, e, ok = pemAround(text, a, b)
		}
		if ok {
			fs = append(fs, Finding{Start: s, End: e, Kind: KindPrivateKey})
			return fs, max(resume, e)
		}
	}
	if s, e, ok := bearerAt(text, a, b); ok {
		fs = append(fs, Finding{Start: s, End: e, Kind: KindBearer})
	}
	return fs, resume
}

// family groups the formats by their first byte, for analyseRun's skips.
func family(c byte) int {
	switch c {
	case 's':
		return 0
	case 'r':
		return 1
	case 'A':
		return 2
	case 'g':
		return 3
	case 'x':
		return 4
	case 'e':
		return 5
	case 'M', 'N', 'O':
		return 6
	}
	return -1
}

// span returns the end of the longest run of bytes of class c from i,
// bounded by limit.
func span(text []byte, i, limit int, c uint8) int {
	for i < limit && class[text[i]]&c != 0 {
		i++
	}
	return i
}

// isMixed reports whether every byte of s is of class c and s has an upper
// case letter, a lower case letter and a digit, as random tokens do.
func isMixed(s []byte, c uint8) bool {
	var seen uint8
	for _, x := range s {
		k := class[x]
		if k&c == 0 {
			return false
		}
		seen |= k
	}
	return seen&(cUpper|cLower|cDigit) == cUpper|cLower|cDigit
}

// hasDigitLetter reports whether s has both a digit and a letter.
func hasDigitLetter(s []byte) bool {
	var seen uint8
	for _, x := range s {
		seen |= class[x]
	}
	return seen&cDigit != 0 && seen&(cUpper|cLower) != 0
}

func hasPrefix(text []byte, i int, p string) bool {
	return len(text)-i >= len(p) && string(text[i:i+len(p)]) == p
}

// Upper bounds on token lengths; they keep every attempt's work bounded.
const (
	maxToken    = 512
	maxJWTPart  = 8 << 10
	maxJWTHdr   = 2 << 10
	maxDiscord0 = 28
)

// matchAt tries every format that can start at text[i] (a word start
// inside a run ending at b). It returns the end of the match and its kind
// (end <= i when nothing matched) and how far it looked.
func matchAt(text []byte, i, b int) (end int, kind Kind, scanned int) {
	lim := min(b, i+maxToken)
	switch text[i] {
	case 's':
		switch {
		case hasPrefix(text, i, "sk-ant-"):
			body := i + len("sk-ant-")
			e := span(text, body, lim, cB64U)
			if e-body >= 32 && e-i < maxToken && isMixed(text[body:e], cB64U) {
				return e, KindAnthropic, e
			}
			return 0, "", e
		case hasPrefix(text, i, "sk-"):
			body := i + len("sk-")
			e := span(text, body, lim, cB64U)
			if e-body >= 32 && e-i < maxToken && isMixed(text[body:e], cB64U) {
				return e, KindOpenAI, e
			}
			return 0, "", e
		case hasPrefix(text, i, "sk_live_"), hasPrefix(text, i, "sk_test_"):
			return stripe(text, i, lim)
		}
	case 'r':
		if hasPrefix(text, i, "rk_live_") || hasPrefix(text, i, "rk_test_") {
			return stripe(text, i, lim)
		}
	case 'A':
		switch {
		case hasPrefix(text, i, "AKIA"), hasPrefix(text, i, "ASIA"):
			e := span(text, i+4, min(b, i+21), cUpper|cDigit)
			if e-i == 20 && (e == len(text) || class[text[e]]&cAlnum == 0) {
				return e, KindAWSAccessKey, e
			}
			return 0, "", e
		case hasPrefix(text, i, "AIza"):
			e := span(text, i+4, min(b, i+40), cB64U)
			if e-i == 39 && (e == len(text) || class[text[e]]&cB64U == 0) && hasDigitLetter(text[i+4:e]) {
				return e, KindGoogleAPIKey, e
			}
			return 0, "", e
		}
	case 'g':
		if len(text)-i > 4 && text[i+1] == 'h' && text[i+3] == '_' && bytes.IndexByte([]byte("pousr"), text[i+2]) >= 0 {
			e := span(text, i+4, min(b, i+41), cAlnum)
			if e-i == 40 && (e == len(text) || class[text[e]]&cB64U == 0) && hasDigitLetter(text[i+4:e]) {
				return e, KindGitHubClassic, e
			}
			return 0, "", e
		}
		if hasPrefix(text, i, "github_pat_") {
			e := span(text, i+11, lim, cB64U)
			scanned := e
			for e > i+11 && text[e-1] == '-' {
				e--
			}
			if e-i-11 >= 50 && scanned-i < maxToken && hasDigitLetter(text[i+11:e]) {
				return e, KindGitHubFineGrained, e
			}
			return 0, "", scanned
		}
	case 'x':
		if hasPrefix(text, i, "xapp-") || (hasPrefix(text, i, "xox") && len(text)-i > 4 && text[i+4] == '-' && bytes.IndexByte([]byte("bpare"), text[i+3]) >= 0) {
			body := i + 5
			e := span(text, body, lim, cB64U)
			if e-body >= 20 && e-i < maxToken && hasDigitLetter(text[body:e]) {
				return e, KindSlack, e
			}
			return 0, "", e
		}
	case 'e':
		if hasPrefix(text, i, "eyJ") {
			return jwt(text, i, b)
		}
	case 'M', 'N', 'O':
		return discord(text, i, b)
	}
	return 0, "", i + 1
}

func stripe(text []byte, i, lim int) (int, Kind, int) {
	body := i + 8
	e := span(text, body, lim, cAlnum)
	if e-body >= 20 && e-i < maxToken && hasDigitLetter(text[body:e]) {
		return e, KindStripe, e
	}
	return 0, "", e
}

// parts splits a dotted base64url token starting at i into up to three
// parts, each at most max[k] bytes: it returns their end offsets and how
// many there are (0 when a part is too long).
func parts(text []byte, i, b int, max [3]int) (ends [3]int, n int) {
	p := i
	for n < 3 {
		e := span(text, p, min(b, p+max[n]+1), cB64U)
		if e-p > max[n] {
			return ends, 0
		}
		ends[n] = e
		n++
		if e >= b || text[e] != '.' || n == 3 {
			break
		}
		p = e + 1
	}
	return ends, n
}

func decodeB64URL(s []byte) ([]byte, bool) {
	s = bytes.TrimRight(s, "=")
	out := make([]byte, base64.RawURLEncoding.DecodedLen(len(s)))
	n, err := base64.RawURLEncoding.Decode(out, s)
	return out[:n], err == nil
}

// jwt matches header.payload.signature where the header decodes to a JSON
// object with an "alg" member.
func jwt(text []byte, i, b int) (int, Kind, int) {
	ends, n := parts(text, i, b, [3]int{maxJWTHdr, maxJWTPart, maxJWTPart})
	if n == 0 {
		return 0, "", min(b, i+maxJWTHdr)
	}
	if n < 2 || ends[0]-i < 10 || ends[1]-ends[0]-1 < 10 {
		return 0, "", ends[0]
	}
	hdr, ok := decodeB64URL(text[i:ends[0]])
	if !ok || !json.Valid(hdr) || !bytes.Contains(hdr, []byte(`"alg"`)) {
		return 0, "", ends[0]
	}
	end := ends[1]
	if n == 3 {
		end = ends[2]
	} else if end < b && text[end] == '.' {
		end++ // unsigned token: header.payload.
	}
	return end, KindJWT, end
}

// discord matches a bot token: base64url(user id).timestamp.hmac, where
// the first part decodes to a 17 to 20 digit snowflake.
func discord(text []byte, i, b int) (int, Kind, int) {
	ends, n := parts(text, i, b, [3]int{maxDiscord0, 7, 40})
	if n != 3 {
		return 0, "", i + 1
	}
	l0, l1, l2 := ends[0]-i, ends[1]-ends[0]-1, ends[2]-ends[1]-1
	if l0 < 23 || l1 < 6 || l2 < 27 || (ends[2] < b && text[ends[2]] == '.') {
		return 0, "", i + 1
	}
	id, ok := decodeB64URL(text[i:ends[0]])
	if !ok || len(id) < 17 || len(id) > 20 {
		return 0, "", i + 1
	}
	for _, c := range id {
		if c < '0' || c > '9' {
			return 0, "", i + 1
		}
	}
	return ends[2], KindDiscord, ends[2]
}

// bearerAt reports a long credential-looking token at text[a:b] preceded by
// "Bearer " (any case).
func bearerAt(text []byte, a, b int) (int, int, bool) {
	p := a
	for p > 0 && a-p < 8 && (text[p-1] == ' ' || text[p-1] == '\t') {
		p--
	}
	if p == a || p < 6 || !bytes.EqualFold(text[p-6:p], []byte("bearer")) {
		return 0, 0, false
	}
	if p > 6 && class[text[p-7]]&cAlnum != 0 {
		return 0, 0, false
	}
	e := b
	for e > a && (text[e-1] == '.' || text[e-1] == '=') {
		e--
	}
	if e-a < minRun || !hasDigitLetter(text[a:e]) {
		return 0, 0, false
	}
	return a, b, true
}

const (
	pemLookBack  = 1024
	pemLookAhead = 16 << 10
)

// pemAround finds a PEM private key block around offset i (inside its body
// or at its header): "-----BEGIN ...PRIVATE KEY...-----" before i and the
// matching "-----END ...-----" after it (or the end of the run at b when
// the block is cut).
func pemAround(text []byte, i, b int) (int, int, bool) {
	lo := max(0, i-pemLookBack)
	begin := bytes.LastIndex(text[lo:min(len(text), i+len("-----BEGIN "))], []byte("-----BEGIN "))
	if begin < 0 {
		return 0, 0, false
	}
	begin += lo
	lstart := begin + len("-----BEGIN ")
	lend := bytes.Index(text[lstart:min(len(text), lstart+64)], []byte("-----"))
	if lend < 0 || !bytes.Contains(text[lstart:lstart+lend], []byte("PRIVATE KEY")) {
		return 0, 0, false
	}
	from := lstart + lend + 5
	hi := min(len(text), from+pemLookAhead)
	end := bytes.Index(text[from:hi], []byte("-----END "))
	if end < 0 {
		return begin, max(b, from), true
	}
	end += from + len("-----END ")
	close := bytes.Index(text[end:min(len(text), end+64)], []byte("-----"))
	if close < 0 {
		return begin, end, true
	}
	return begin, end + close + 5, true
}
