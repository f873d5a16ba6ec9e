package leak

import (
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// mixedCorpus returns about size bytes of prose and code: the Go spec and
// net/http sources when the Go distribution is present, else generated
// text.
func mixedCorpus(tb testing.TB, size int) []byte {
	tb.Helper()
	var buf bytes.Buffer
	root := runtime.GOROOT()
	if spec, err := os.ReadFile(filepath.Join(root, "doc", "go_spec.html")); err == nil {
		buf.Write(spec[:min(len(spec), size/3)])
	}
	files, _ := filepath.Glob(filepath.Join(root, "src", "net", "http", "*.go"))
	for _, f := range files {
		if buf.Len() >= size {
			break
		}
		b, err := os.ReadFile(f)
		if err == nil {
			buf.Write(b)
		}
	}
	for buf.Len() < size {
		buf.WriteString("The quick brown fox jumps over the lazy dog; func main() { fmt.Println(\"hello, world\") }\n")
	}
	return buf.Bytes()[:size]
}

func BenchmarkScan1MiB100Secrets(b *testing.B) {
	text := mixedCorpus(b, 1<<20)
	var secrets [][]byte
	for i := range 100 {
		secrets = append(secrets, []byte(rnd(uint64(1000+i), alnum, 24+i%24)))
	}
	// Plant a few leaks so verification paths run too.
	for i, s := range secrets[:5] {
		copy(text[100_000*(i+1):], s)
	}
	copy(text[700_000:], " ghp_"+rnd(7, alnum, 36)+" ")
	d := New(secrets)
	if got := len(d.Scan(text)); got < 6 {
		b.Fatalf("found %d planted leaks, want at least 6", got)
	}
	b.SetBytes(int64(len(text)))
	b.ReportAllocs()
	for b.Loop() {
		d.Scan(text)
	}
}

func BenchmarkScan1MiBPatterns(b *testing.B) {
	text := mixedCorpus(b, 1<<20)
	d := NewPatterns()
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		d.Scan(text)
	}
}

func BenchmarkRedactProse(b *testing.B) {
	text := strings.Repeat("Please summarise this thread and open a ticket for the login bug. ", 64)
	d := New([][]byte{[]byte(rnd(1, alnum, 32))})
	b.SetBytes(int64(len(text)))
	for b.Loop() {
		d.Redact(text)
	}
}

// BenchmarkScanPathological scans the inputs of TestPathologicalInputs
// (256 KiB of one format prefix repeated); compare its MB/s with
// BenchmarkScan1MiBPatterns on ordinary text.
func BenchmarkScanPathological(b *testing.B) {
	d := New([][]byte{[]byte("s3cr3t-value-1234")})
	for _, unit := range []string{"-M", "-eyJ", "-sk-ant-", "-github_pat_", "-----BEGIN PRIVATE KEY-----", "eyJhbGciOiJIUzI1NiJ9."} {
		text := bytes.Repeat([]byte(unit), (256<<10)/len(unit))
		b.Run(strings.Trim(unit, "-."), func(b *testing.B) {
			b.SetBytes(int64(len(text)))
			for b.Loop() {
				d.Scan(text)
			}
		})
	}
}
