package leak

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Measured false-positive rate of the pattern detector (no user secrets)
// with Go 1.26.8:
//
//   - over the whole of $GOROOT/src and $GOROOT/doc (98.4 MB of .go, .s,
//     .html, .md, .txt, .json, .pem files): 4 findings, every one a real PEM
//     private key (crypto/tls/example_test.go twice, crypto/x509/
//     platform_root_key.pem, crypto/tls/testdata/example-key.pem), so 0
//     false positives: 0.033 findings per MB outside testdata, 0.041 with it;
//   - over the capped sample this test reads (every k-th file, 25 MB): 0.
//
// maxFPPerMB is the failure threshold outside testdata directories: about
// five findings in the sample. Go's source is denser in base64 blobs,
// hashes and test vectors than the chat text and tool output Talon scans,
// so crossing it means a matcher has become loose.
const maxFPPerMB = 0.2

const corpusCap = 30 << 20

func TestFalsePositives(t *testing.T) {
	if testing.Short() {
		t.Skip("reads the Go distribution")
	}
	root := runtime.GOROOT()
	d := NewPatterns()
	// Collect candidate files, then read every k-th so the capped sample
	// spreads over the whole tree instead of stopping inside cmd/.
	type file struct {
		path string
		size int64
	}
	var files []file
	var size int64
	for _, dir := range []string{"src", "doc"} {
		_ = filepath.WalkDir(filepath.Join(root, dir), func(path string, de fs.DirEntry, err error) error {
			if err != nil || de.IsDir() {
				return nil
			}
			switch filepath.Ext(path) {
			case ".go", ".html", ".md", ".txt", ".s", ".json", ".pem", ".key", ".crt":
			default:
				return nil
			}
			if info, err := de.Info(); err == nil {
				files = append(files, file{path, info.Size()})
				size += info.Size()
			}
			return nil
		})
	}
	k := int(size/corpusCap) + 1
	var total, totalTD, found, foundTD int
	kinds := map[Kind]int{}
	for i := 0; i < len(files); i += k {
		path := files[i].path
		data, err := os.ReadFile(path)
		if err != nil || bytes.IndexByte(data, 0) >= 0 {
			continue
		}
		fs := d.Scan(data)
		inTD := strings.Contains(path, string(filepath.Separator)+"testdata"+string(filepath.Separator))
		if inTD {
			totalTD += len(data)
			foundTD += len(fs)
		} else {
			total += len(data)
			found += len(fs)
		}
		for _, f := range fs {
			kinds[f.Kind]++
			if testing.Verbose() {
				rel, _ := filepath.Rel(root, path)
				t.Logf("finding %s in %s at %d (testdata: %v)", f.Kind, rel, f.Start, inTD)
			}
		}
	}
	if total == 0 {
		t.Skip("no Go distribution source found")
	}
	mb := float64(total) / (1 << 20)
	mbAll := float64(total+totalTD) / (1 << 20)
	rate := float64(found) / mb
	t.Logf("outside testdata: %d findings in %.1f MB = %.3f per MB", found, mb, rate)
	t.Logf("including testdata: %d findings in %.1f MB = %.3f per MB", found+foundTD, mbAll, float64(found+foundTD)/mbAll)
	t.Logf("by kind: %v", kinds)
	if rate > maxFPPerMB {
		t.Errorf("false-positive rate %.3f per MB outside testdata, want <= %v", rate, maxFPPerMB)
	}
}
