package attach_test

import (
	"bytes"
	"image"
	"image/jpeg"
	"syscall"
	"testing"
	"time"

	"golang.org/x/image/draw"

	"github.com/talonhq/talon/agent/attach"
)

// cpuTime is the CPU time the process has used, all threads.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// loop runs f b.N times and reports the CPU time per call beside the wall
// time: on a machine shared with other work, the CPU time is what one
// core spends, the wall time also counts the waits for a core.
func loop(b *testing.B, f func()) {
	start := cpuTime()
	for b.Loop() {
		f()
	}
	b.ReportMetric(float64(cpuTime()-start)/float64(b.N)/1e6, "cpu-ms/op")
}

// The bound: scaling a 12-megapixel photo takes at most 150 ms on
// one core (go test -bench Scale -cpu 1). Resize is the scaling alone;
// ScaleJPEG adds decoding and encoding; CatmullRom is the reference in the
// same run: x/image/draw's best filter on the whole image, which Resize
// must beat.
func BenchmarkScale12MP(b *testing.B) {
	src := photo(4000, 3000)
	b.Run("Resize", func(b *testing.B) {
		loop(b, func() { attach.Resize(src, 1568) })
	})
	b.Run("CatmullRom", func(b *testing.B) {
		loop(b, func() {
			dst := image.NewRGBA(image.Rect(0, 0, 1568, 1176))
			draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
		})
	})
	var jpg bytes.Buffer
	if err := jpeg.Encode(&jpg, src, &jpeg.Options{Quality: 90}); err != nil {
		b.Fatal(err)
	}
	b.Run("ScaleJPEG", func(b *testing.B) {
		loop(b, func() {
			if _, err := attach.Scale(bytes.NewReader(jpg.Bytes()), int64(jpg.Len()), 1568); err != nil {
				b.Fatal(err)
			}
		})
	})
}
