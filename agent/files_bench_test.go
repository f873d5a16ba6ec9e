package agent_test

import (
	"bytes"
	"context"
	"fmt"
	"image"
	"image/jpeg"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/agent/llm/llmtest"
	"github.com/talonhq/talon/store"
)

// genFetcher is a channel whose files are made as they are read, so that
// the benchmark's own memory does not hold them.
type genFetcher struct {
	recorder
	jpeg []byte
}

func (g *genFetcher) FetchFile(_ context.Context, f agent.File) (io.ReadCloser, error) {
	if f.Name == "photo.jpg" {
		return io.NopCloser(bytes.NewReader(g.jpeg)), nil
	}
	return io.NopCloser(io.LimitReader(&logLines{}, f.Size)), nil
}

// logLines yields log lines without end.
type logLines struct {
	n   int
	buf []byte
}

func (l *logLines) Read(p []byte) (int, error) {
	if len(l.buf) == 0 {
		l.n++
		l.buf = fmt.Appendf(l.buf[:0], "2026-12-02T13:%02d:%02d.%03dZ INFO request id=%08d path=/api/v1/items status=200 dur=12ms\n", l.n/60000%60, l.n/1000%60, l.n%1000, l.n)
	}
	k := copy(p, l.buf)
	l.buf = l.buf[k:]
	return k, nil
}

// peakRSS resets the process's peak resident size (Linux clear_refs) and
// returns a function that reports how far the peak rose above the
// resident size at the reset, in bytes.
func peakRSS(b *testing.B) func() int64 {
	b.Helper()
	status := func(field string) int64 {
		raw, err := os.ReadFile("/proc/self/status")
		if err != nil {
			b.Fatalf("read /proc/self/status: %v (this benchmark needs Linux)", err)
		}
		for line := range strings.SplitSeq(string(raw), "\n") {
			if rest, ok := strings.CutPrefix(line, field+":"); ok {
				kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
				return kb << 10
			}
		}
		b.Fatalf("no %s in /proc/self/status", field)
		return 0
	}
	runtime.GC()
	debug.FreeOSMemory()
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		b.Fatalf("reset the peak RSS: %v", err)
	}
	idle := status("VmRSS")
	return func() int64 { return status("VmHWM") - idle }
}

// BenchmarkTurnFileMemory measures how far a turn with one attached file
// raises the process's peak resident memory above its idle level (the
// issue's bound: 40 MB for a 20 MB file), with a turn without a file as the
// same-run reference. Run it alone, one iteration at a time:
//
//	go test ./agent -run '^$' -bench TurnFileMemory -benchtime 5x
func BenchmarkTurnFileMemory(b *testing.B) {
	var photo bytes.Buffer
	img := image.NewYCbCr(image.Rect(0, 0, 4000, 3000), image.YCbCrSubsampleRatio420)
	for i := range img.Y {
		img.Y[i] = uint8(i * 7 / 3)
	}
	if err := jpeg.Encode(&photo, img, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	img = nil
	cases := []struct {
		name string
		file *agent.File
	}{
		{"NoFile", nil},
		{"Log20MB", &agent.File{Name: "app.log", Size: 20 << 20, Source: "gen"}},
		{"Photo12MP", &agent.File{Name: "photo.jpg", Size: int64(photo.Len()), Source: "gen"}},
	}
	for _, tc := range cases {
		b.Run(tc.name, func(b *testing.B) {
			dir := b.TempDir()
			db, err := store.Open(context.Background(), filepath.Join(dir, "t.db"))
			if err != nil {
				b.Fatal(err)
			}
			defer db.Close()
			srv := llmtest.NewServer(b, llmtest.Text("ok"))
			ch := &genFetcher{jpeg: photo.Bytes()}
			rt := &agent.Runtime{Store: db, LLM: provider(b, srv.URL), Log: zerolog.Nop(),
				Files: &store.FileDir{Dir: filepath.Join(dir, "files")}, Limits: agent.Limits{ShutdownGrace: 50 * time.Millisecond}}
			rt.Register(ch)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- rt.Run(ctx) }()
			defer func() { cancel(); <-done }()
			<-rt.Ready()
			var worst int64
			for i := 0; b.Loop(); i++ {
				b.StopTimer()
				in := agent.Inbound{DedupeKey: fmt.Sprintf("%s-%d", tc.name, i), Key: key("u" + strconv.Itoa(i)), Text: "what is in it?"}
				if tc.file != nil {
					f := *tc.file
					f.ID = strconv.Itoa(i)
					in.Files = []agent.File{f}
				}
				peak := peakRSS(b)
				b.StartTimer()
				if _, err := rt.Accept(context.Background(), in); err != nil {
					b.Fatal(err)
				}
				wctx, wcancel := context.WithTimeout(context.Background(), time.Minute)
				if err := rt.WaitIdle(wctx); err != nil {
					b.Fatal(err)
				}
				wcancel()
				worst = max(worst, peak())
			}
			if n := len(srv.Requests()); n != b.N {
				b.Fatalf("model requests = %d, want %d", n, b.N)
			}
			b.ReportMetric(float64(worst)/(1<<20), "MiB-peak-above-idle")
		})
	}
}
