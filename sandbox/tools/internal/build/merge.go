package main

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"slices"
)

// Wasm section ids used here.
const (
	sectionData      = 11
	sectionDataCount = 12
)

// segment is an active data segment of memory 0 at a constant offset.
type segment struct {
	offset uint32
	data   []byte
}

// errUnsupported means the module has a data section this rewriter does not
// handle; the caller keeps the module as it is.
var errUnsupported = errors.New("unsupported data section")

// MergeDataSegments returns wasm with its active data segments merged into
// as few as possible: neighbours whose gap is at most maxGap bytes become one
// segment with the gap filled with zeros, which is what the memory holds
// there anyway. The Go linker emits tens of thousands of segments (one per
// run of non-zero bytes) and every segment costs time at instantiation.
//
// Only the module shape the Go linker produces is handled: segments of
// flag 0 with an i32.const offset, disjoint (in any order). Anything else
// returns errUnsupported (wrapped) and the module must be used unmerged.
func MergeDataSegments(wasm []byte, maxGap uint32) ([]byte, error) {
	if len(wasm) < 8 || !bytes.Equal(wasm[:4], []byte("\x00asm")) {
		return nil, errors.New("merge data segments: not a wasm module")
	}
	out := append([]byte(nil), wasm[:8]...)
	var dataCountAt = -1 // index in out of a DataCount section's payload
	rest := wasm[8:]
	for len(rest) > 0 {
		id := rest[0]
		size, n, err := uleb(rest[1:])
		if err != nil || uint64(len(rest)-1-n) < size {
			return nil, fmt.Errorf("merge data segments: bad section header: %v", err)
		}
		payload := rest[1+n : 1+n+int(size)]
		rest = rest[1+n+int(size):]
		switch id {
		case sectionDataCount:
			dataCountAt = len(out)
			out = append(out, id)
			out = appendUleb(out, uint64(len(payload)))
			out = append(out, payload...)
		case sectionData:
			segs, err := parseData(payload)
			if err != nil {
				return nil, fmt.Errorf("merge data segments: %w", err)
			}
			merged := merge(segs, maxGap)
			if dataCountAt >= 0 {
				// A DataCount section precedes the code; rewrite it.
				var err error
				out, err = rewriteDataCount(out, dataCountAt, len(merged))
				if err != nil {
					return nil, fmt.Errorf("merge data segments: %w", err)
				}
			}
			p := encodeData(merged)
			out = append(out, id)
			out = appendUleb(out, uint64(len(p)))
			out = append(out, p...)
		default:
			out = append(out, id)
			out = appendUleb(out, size)
			out = append(out, payload...)
		}
	}
	return out, nil
}

// parseData decodes a data section of Go-linker shape.
func parseData(p []byte) ([]segment, error) {
	count, n, err := uleb(p)
	if err != nil {
		return nil, err
	}
	p = p[n:]
	segs := make([]segment, 0, min(count, 1<<20))
	for i := uint64(0); i < count; i++ {
		if len(p) < 2 || p[0] != 0 || p[1] != 0x41 { // flags 0, i32.const
			return nil, fmt.Errorf("segment %d: %w", i, errUnsupported)
		}
		off, n, err := sleb32(p[2:])
		if err != nil {
			return nil, fmt.Errorf("segment %d: %w", i, err)
		}
		p = p[2+n:]
		if len(p) < 1 || p[0] != 0x0b {
			return nil, fmt.Errorf("segment %d: offset is not a constant: %w", i, errUnsupported)
		}
		l, n, err := uleb(p[1:])
		if err != nil || uint64(len(p)-1-n) < l {
			return nil, fmt.Errorf("segment %d: bad length", i)
		}
		if uint64(uint32(off))+l > 1<<32 {
			return nil, fmt.Errorf("segment %d: beyond 4 GiB", i)
		}
		segs = append(segs, segment{offset: uint32(off), data: p[1+n : 1+n+int(l)]})
		p = p[1+n+int(l):]
	}
	if len(p) != 0 {
		return nil, errors.New("trailing bytes in data section")
	}
	// Disjoint segments initialise memory the same in any order, so they
	// may be sorted; overlapping ones would depend on the order.
	slices.SortStableFunc(segs, func(a, b segment) int { return cmp.Compare(a.offset, b.offset) })
	for i := 1; i < len(segs); i++ {
		if uint64(segs[i].offset) < uint64(segs[i-1].offset)+uint64(len(segs[i-1].data)) {
			return nil, fmt.Errorf("segments overlap at %#x: %w", segs[i].offset, errUnsupported)
		}
	}
	return segs, nil
}

// merge joins sorted, disjoint segments whose gaps are at most maxGap.
func merge(segs []segment, maxGap uint32) []segment {
	var out []segment
	for _, s := range segs {
		if len(out) > 0 {
			last := &out[len(out)-1]
			end := last.offset + uint32(len(last.data))
			if s.offset-end <= maxGap {
				last.data = append(last.data, make([]byte, s.offset-end)...)
				last.data = append(last.data, s.data...)
				continue
			}
		}
		out = append(out, segment{offset: s.offset, data: append([]byte(nil), s.data...)})
	}
	return out
}

// encodeData encodes a data section payload.
func encodeData(segs []segment) []byte {
	p := appendUleb(nil, uint64(len(segs)))
	for _, s := range segs {
		p = append(p, 0, 0x41)
		p = appendSleb(p, int64(int32(s.offset)))
		p = append(p, 0x0b)
		p = appendUleb(p, uint64(len(s.data)))
		p = append(p, s.data...)
	}
	return p
}

// rewriteDataCount replaces the DataCount section whose id is at out[at].
func rewriteDataCount(out []byte, at, count int) ([]byte, error) {
	size, n, err := uleb(out[at+1:])
	if err != nil {
		return nil, err
	}
	tail := append([]byte(nil), out[at+1+n+int(size):]...)
	p := appendUleb(nil, uint64(count))
	out = append(out[:at+1], appendUleb(nil, uint64(len(p)))...)
	out = append(out, p...)
	return append(out, tail...), nil
}

func uleb(b []byte) (uint64, int, error) {
	var v uint64
	for i := 0; i < len(b) && i < 10; i++ {
		v |= uint64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			return v, i + 1, nil
		}
	}
	return 0, 0, errors.New("bad LEB128")
}

func sleb32(b []byte) (int32, int, error) {
	var v int64
	for i := 0; i < len(b) && i < 5; i++ {
		v |= int64(b[i]&0x7f) << (7 * i)
		if b[i]&0x80 == 0 {
			if shift := 7 * (i + 1); shift < 64 && b[i]&0x40 != 0 {
				v |= -1 << shift
			}
			return int32(v), i + 1, nil
		}
	}
	return 0, 0, errors.New("bad LEB128")
}

func appendUleb(b []byte, v uint64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			b = append(b, c|0x80)
			continue
		}
		return append(b, c)
	}
}

func appendSleb(b []byte, v int64) []byte {
	for {
		c := byte(v & 0x7f)
		v >>= 7
		if (v == 0 && c&0x40 == 0) || (v == -1 && c&0x40 != 0) {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// mergeGap is the largest run of zeros the build fills to join two
// segments. Joining everything costs about 400 KiB of zeros per module.
const mergeGap = 1 << 30
