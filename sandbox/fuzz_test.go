package sandbox

import (
	"encoding/json"
	"testing"
)

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte("name: x\ndescription: d\n"))
	f.Add([]byte("name: x\ndescription: d\nhttp: [{host: a}]\nlimits: {deadline: 1s, memory_mib: 2}\n"))
	f.Add([]byte("name: x\nparameters: {type: object, properties: {1: 2}}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest("x.yaml", data)
		if err != nil {
			return
		}
		if m.Name != "x" || !json.Valid(m.Parameters) || m.Limits.Deadline <= 0 || m.Limits.MemoryMiB < 1 {
			t.Errorf("accepted an invalid manifest: %+v", m)
		}
	})
}

func FuzzDecodeOutput(f *testing.F) {
	f.Add([]byte(`{"ok":1}`))
	f.Add([]byte(`{"error":"no"}`))
	f.Add([]byte(`{"ok":1,"error":"x"}`))
	f.Add([]byte(`{"ok":1,"file":{"name":"a.csv","type":"text/csv","data":"YSxiCg=="}}`))
	f.Fuzz(func(t *testing.T, out []byte) {
		lim := defaultLimits
		lim.MaxOutputBytes, lim.MaxFileBytes = 64, 64
		res, err := decodeOutput("x", out, lim)
		if err != nil {
			return
		}
		if f := res.File; f != nil && (len(f.Data) == 0 || len(f.Data) > 64 || !fileName.MatchString(f.Name) || len(f.Name) > maxFileName) {
			t.Errorf("accepted file %q of %d bytes", f.Name, len(f.Data))
		}
		if !res.IsError && len(res.Content) > 64 {
			t.Errorf("accepted ok content of %d bytes", len(res.Content))
		}
		if !res.IsError && !json.Valid([]byte(res.Content)) {
			t.Errorf("ok content %q is not JSON", res.Content)
		}
	})
}
