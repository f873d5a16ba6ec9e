package console

import (
	"encoding/binary"
	"errors"
	"math"
	"time"
)

// The Usage page's sums of a period's settled days, encoded to be kept in
// the store (keptUsage) and read back by a console with nothing in memory:
// decoding them costs a small part of summing the period's rows again.

// usageSumsVersion is the first byte of an encoded usageSums.
const usageSumsVersion = 1

// encode appends m (sorted: sortLists) to b.
func (m *usageSums) encode(b []byte) []byte {
	b = append(b, usageSumsVersion)
	b = appendTotal(b, m.total)
	for i, l := range m.lists {
		keys := make([]usageKey, len(l))
		for k, j := range m.index[i] {
			keys[j] = k
		}
		b = binary.AppendUvarint(b, uint64(len(l)))
		for j, t := range l {
			b = appendString(b, keys[j].a)
			b = appendString(b, keys[j].b)
			b = appendString(b, keys[j].c)
			b = appendTotal(b, t)
		}
	}
	b = binary.AppendUvarint(b, uint64(len(m.perDay)))
	for day, n := range m.perDay {
		b = binary.AppendVarint(b, day.UnixMilli())
		b = binary.AppendVarint(b, n)
	}
	b = binary.AppendUvarint(b, uint64(len(m.rows)))
	for _, r := range m.rows {
		b = binary.AppendVarint(b, r.Day.UnixMilli())
		for _, s := range [...]string{r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server} {
			b = appendString(b, s)
		}
		b = binary.AppendVarint(b, r.Calls)
		b = binary.AppendVarint(b, r.InputTokens)
		b = binary.AppendVarint(b, r.OutputTokens)
		b = binary.LittleEndian.AppendUint64(b, math.Float64bits(r.Cost))
	}
	return binary.AppendUvarint(b, uint64(m.n))
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTotal(b []byte, t usageTotal) []byte {
	b = binary.AppendVarint(b, t.Calls)
	b = binary.AppendVarint(b, t.InputTokens)
	b = binary.AppendVarint(b, t.OutputTokens)
	b = binary.AppendVarint(b, t.Total)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(t.Cost))
}

var errUsageSums = errors.New("console: kept usage sums: cut short or not of this version")

// usageDecoder reads an encoded usageSums; its strings share one copy of
// the value.
type usageDecoder struct {
	s   string
	err bool
}

func (d *usageDecoder) uvarint() uint64 {
	if d.err {
		return 0
	}
	var x uint64
	var shift uint
	for i := 0; i < len(d.s) && i < binary.MaxVarintLen64; i++ {
		c := d.s[i]
		if c < 0x80 {
			d.s = d.s[i+1:]
			return x | uint64(c)<<shift
		}
		x |= uint64(c&0x7f) << shift
		shift += 7
	}
	d.err = true
	return 0
}

func (d *usageDecoder) varint() int64 {
	u := d.uvarint()
	x := int64(u >> 1)
	if u&1 != 0 {
		x = ^x
	}
	return x
}

// count is a length no longer than what is left (each item takes a byte
// at least).
func (d *usageDecoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.s)) {
		d.err = true
		return 0
	}
	return int(n)
}

func (d *usageDecoder) string() string {
	n := d.count()
	if d.err {
		return ""
	}
	s := d.s[:n]
	d.s = d.s[n:]
	return s
}

func (d *usageDecoder) float() float64 {
	if d.err || len(d.s) < 8 {
		d.err = true
		return 0
	}
	x := binary.LittleEndian.Uint64([]byte(d.s[:8]))
	d.s = d.s[8:]
	return math.Float64frombits(x)
}

func (d *usageDecoder) total(key string) usageTotal {
	t := usageTotal{Key: key}
	t.Calls, t.InputTokens, t.OutputTokens, t.Total = d.varint(), d.varint(), d.varint(), d.varint()
	t.Cost = d.float()
	return t
}

// decodeUsageSums reads what encode wrote.
func decodeUsageSums(data []byte) (*usageSums, error) {
	if len(data) == 0 || data[0] != usageSumsVersion {
		return nil, errUsageSums
	}
	d := &usageDecoder{s: string(data[1:])}
	m := &usageSums{total: d.total("")}
	for i := range m.lists {
		n := d.count()
		m.lists[i] = make([]usageTotal, 0, n)
		m.index[i] = make(map[usageKey]int, n)
		for j := 0; j < n && !d.err; j++ {
			k := usageKey{d.string(), d.string(), d.string()}
			m.lists[i] = append(m.lists[i], d.total(keyName(i, k)))
			m.index[i][k] = j
		}
	}
	n := d.count()
	m.perDay = make(map[time.Time]int64, n)
	for j := 0; j < n && !d.err; j++ {
		day := time.UnixMilli(d.varint()).UTC()
		m.perDay[day] = d.varint()
	}
	n = d.count()
	m.rows = make([]usageRow, 0, n)
	for j := 0; j < n && !d.err; j++ {
		var r usageRow
		r.Day = time.UnixMilli(d.varint()).UTC()
		r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server = d.string(), d.string(), d.string(), d.string(), d.string(), d.string()
		r.Calls, r.InputTokens, r.OutputTokens = d.varint(), d.varint(), d.varint()
		r.Cost = d.float()
		m.rows = append(m.rows, r)
	}
	m.n = int(d.uvarint())
	if d.err || d.s != "" {
		return nil, errUsageSums
	}
	return m, nil
}
