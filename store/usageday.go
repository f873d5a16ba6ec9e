package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// A settled day's usage rows, encoded in one value (usage_days: migration
// 0030 here, 0028 on PostgreSQL), so that the console's first load of a
// period reads a value a day rather than every principal's rows.
//
// The value: version 1, its strings (uvarint count, then each as uvarint
// length and bytes), then its rows (uvarint count, then each as the
// principal's id, the indexes of platform, workspace, user, channel, model
// and server among the strings, and calls, input and output tokens as
// varints).
const usageDayFormat = 1

// ErrUsageDayValue is returned for a value DecodeUsageDay cannot read.
var ErrUsageDayValue = errors.New("store: a day's usage value does not decode")

// EncodeUsageDay encodes one day's rows and their principals' ids (ids[i]
// is rows[i]'s); the rows' Day is not kept.
func EncodeUsageDay(rows []UsageRow, ids []int64) []byte {
	index := map[string]uint64{}
	var strs []string
	idx := func(s string) uint64 {
		i, ok := index[s]
		if !ok {
			i = uint64(len(strs))
			index[s] = i
			strs = append(strs, s)
		}
		return i
	}
	body := make([]byte, 0, 24*len(rows))
	for i, r := range rows {
		body = binary.AppendUvarint(body, uint64(ids[i]))
		for _, s := range [...]string{r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server} {
			body = binary.AppendUvarint(body, idx(s))
		}
		body = binary.AppendVarint(body, r.Calls)
		body = binary.AppendVarint(body, r.InputTokens)
		body = binary.AppendVarint(body, r.OutputTokens)
	}
	b := []byte{usageDayFormat}
	b = binary.AppendUvarint(b, uint64(len(strs)))
	for _, s := range strs {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	b = binary.AppendUvarint(b, uint64(len(rows)))
	return append(b, body...)
}

// dayReader reads the varints of a day's value; bad is set once one
// cannot be read.
type dayReader struct {
	b   []byte
	bad bool
}

func (r *dayReader) uv() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *dayReader) sv() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

// readUsageDayHead reads what comes before the rows of a day's value (what
// EncodeUsageDay made): its strings, left in b, and the number of rows.
// ok is false when b is not such a value.
func readUsageDayHead(b []byte) (r dayReader, strs [][]byte, rows uint64, ok bool) {
	if len(b) == 0 || b[0] != usageDayFormat {
		return r, nil, 0, false
	}
	r.b = b[1:]
	ns := r.uv()
	if r.bad || ns > uint64(len(r.b)) {
		return r, nil, 0, false
	}
	strs = make([][]byte, ns)
	for i := range strs {
		l := r.uv()
		if r.bad || l > uint64(len(r.b)) {
			return r, nil, 0, false
		}
		strs[i], r.b = r.b[:l:l], r.b[l:]
	}
	rows = r.uv()
	if r.bad || rows > uint64(len(r.b)) {
		return r, nil, 0, false
	}
	return r, strs, rows, true
}

// DecodeUsageDay decodes what EncodeUsageDay made of the rows of day.
func DecodeUsageDay(day time.Time, b []byte) (rows []UsageRow, ids []int64, err error) {
	fail := func() ([]UsageRow, []int64, error) {
		return nil, nil, fmt.Errorf("%w (day %s)", ErrUsageDayValue, day.Format(time.DateOnly))
	}
	r, raw, nr, ok := readUsageDayHead(b)
	if !ok {
		return fail()
	}
	strs := make([]string, len(raw))
	for i, s := range raw {
		strs[i] = string(s)
	}
	str := func() string {
		i := r.uv()
		if i >= uint64(len(strs)) {
			r.bad = true
			return ""
		}
		return strs[i]
	}
	rows, ids = make([]UsageRow, nr), make([]int64, nr)
	for i := range rows {
		row := &rows[i]
		row.Day = day
		ids[i] = int64(r.uv())
		row.Platform, row.Workspace, row.User, row.Channel, row.Model, row.Server = str(), str(), str(), str(), str(), str()
		row.Calls, row.InputTokens, row.OutputTokens = r.sv(), r.sv(), r.sv()
		if r.bad {
			return fail()
		}
	}
	if len(r.b) != 0 {
		return fail()
	}
	return rows, ids, nil
}

// AddUsageDayTotals adds the rows of one day (unix day) and their
// principals' ids to each principal's totals, today's from todayDay on.
func AddUsageDayTotals(totals map[int64]UserTotal, day, todayDay int64, rows []UsageRow, ids []int64) {
	for i, r := range rows {
		t, ok := totals[ids[i]]
		if !ok {
			t = UserTotal{ID: ids[i], Platform: r.Platform, Workspace: r.Workspace, User: r.User, LastDay: day}
		}
		n := r.InputTokens + r.OutputTokens
		t.Month += n
		if day >= todayDay {
			t.Today += n
		}
		t.LastDay = max(t.LastDay, day)
		totals[ids[i]] = t
	}
}

// AddUsageDayValue adds the rows of one day's value (what EncodeUsageDay
// made; day and todayDay are unix days) to each principal's totals, as
// AddUsageDayTotals does with the rows decoded, without decoding them:
// only a principal new to totals has its names made.
func AddUsageDayValue(totals map[int64]UserTotal, day, todayDay int64, b []byte) error {
	fail := func() error {
		return fmt.Errorf("%w (day %s)", ErrUsageDayValue, time.UnixMilli(day*dayMS).UTC().Format(time.DateOnly))
	}
	// The strings stay in b until a new principal needs them.
	r, strs, nr, ok := readUsageDayHead(b)
	if !ok {
		return fail()
	}
	ns := uint64(len(strs))
	for range nr {
		id := int64(r.uv())
		var idx [6]uint64
		for j := range idx {
			if idx[j] = r.uv(); idx[j] >= ns {
				r.bad = true
			}
		}
		r.sv() // calls
		n := r.sv() + r.sv()
		if r.bad {
			return fail()
		}
		t, ok := totals[id]
		if !ok {
			t = UserTotal{ID: id, Platform: string(strs[idx[0]]), Workspace: string(strs[idx[1]]), User: string(strs[idx[2]]), LastDay: day}
		}
		t.Month += n
		if day >= todayDay {
			t.Today += n
		}
		t.LastDay = max(t.LastDay, day)
		totals[id] = t
	}
	if len(r.b) != 0 {
		return fail()
	}
	return nil
}
