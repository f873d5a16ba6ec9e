package sandbox

import (
	"context"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// A tool's output may carry a file, {"ok": …, "file": {"name", "type",
// "data"}}: it comes back as the result's File, its bytes decoded, within
// limits.max_file_bytes; a name that is not a plain file name, an empty
// file, unknown fields or a file the manifest does not allow fail the call
// with a typed error, and a file over the limit is ErrOutputTooLarge.
func TestToolReturnsFile(t *testing.T) {
	csv := "region,revenue\nnorth,12\nsouth,9\n"
	b64 := base64.StdEncoding.EncodeToString([]byte(csv))
	r := newRuntime(t, Config{}, testTool(t, "fileout", "limits: {max_file_bytes: 64}\n"))
	ctx := context.Background()

	res, err := r.Call(ctx, call("fileout", `{"name":"report.csv","type":"text/csv","data":"`+b64+`"}`))
	if err != nil {
		t.Fatal(err)
	}
	if res.IsError || res.Content != `"done"` {
		t.Errorf("result %+v", res)
	}
	if res.File == nil || res.File.Name != "report.csv" || res.File.MediaType != "text/csv" || string(res.File.Data) != csv {
		t.Fatalf("file %+v", res.File)
	}
	// A type that is not a media type is dropped, the file kept.
	res, err = r.Call(ctx, call("fileout", `{"name":"a b.txt","type":"text/html\r\nX: y","data":"`+b64+`"}`))
	if err != nil || res.File == nil || res.File.MediaType != "" || res.File.Name != "a b.txt" {
		t.Fatalf("file %+v, %v", res.File, err)
	}

	for _, tc := range []struct {
		file string
		want error
		says string
	}{
		{`{"name":"../../etc/passwd","data":"` + b64 + `"}`, ErrBadOutput, "plain name"},
		{`{"name":".env","data":"` + b64 + `"}`, ErrBadOutput, "plain name"},
		{`{"name":"x\u202eexe.txt","data":"` + b64 + `"}`, ErrBadOutput, "plain name"},
		{`{"name":"` + strings.Repeat("a", 101) + `","data":"` + b64 + `"}`, ErrBadOutput, "plain name"},
		{`{"name":"a.txt","data":""}`, ErrBadOutput, "empty"},
		{`{"name":"a.txt","data":"not base64!"}`, ErrBadOutput, "not {"},
		{`{"name":"a.txt","data":"` + b64 + `","path":"/tmp"}`, ErrBadOutput, "not {"},
		{`{"name":"big.bin","data":"` + base64.StdEncoding.EncodeToString(make([]byte, 65)) + `"}`, ErrOutputTooLarge, "limit of 64 bytes"},
	} {
		_, err := r.Call(ctx, call("fileout", tc.file))
		if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.says) {
			t.Errorf("file %.60s: err = %v, want %v saying %q", tc.file, err, tc.want, tc.says)
		}
	}

	none := newRuntime(t, Config{}, testTool(t, "fileout", "limits: {max_file_bytes: 0}\n"))
	_, err = none.Call(ctx, call("fileout", `{"name":"report.csv","data":"`+b64+`"}`))
	if !errors.Is(err, ErrBadOutput) || !strings.Contains(err.Error(), "allows none") {
		t.Errorf("a file from a tool allowed none: %v", err)
	}
}
