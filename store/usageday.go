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

// DecodeUsageDay decodes what EncodeUsageDay made of the rows of day.
func DecodeUsageDay(day time.Time, b []byte) (rows []UsageRow, ids []int64, err error) {
	fail := func() ([]UsageRow, []int64, error) {
		return nil, nil, fmt.Errorf("%w (day %s)", ErrUsageDayValue, day.Format(time.DateOnly))
	}
	if len(b) == 0 || b[0] != usageDayFormat {
		return fail()
	}
	b = b[1:]
	bad := false
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	ns := uv()
	if bad || ns > uint64(len(b)) {
		return fail()
	}
	strs := make([]string, ns)
	for i := range strs {
		l := uv()
		if bad || l > uint64(len(b)) {
			return fail()
		}
		strs[i], b = string(b[:l]), b[l:]
	}
	nr := uv()
	if bad || nr > uint64(len(b)) {
		return fail()
	}
	str := func() string {
		i := uv()
		if i >= uint64(len(strs)) {
			bad = true
			return ""
		}
		return strs[i]
	}
	rows, ids = make([]UsageRow, nr), make([]int64, nr)
	for i := range rows {
		r := &rows[i]
		r.Day = day
		ids[i] = int64(uv())
		r.Platform, r.Workspace, r.User, r.Channel, r.Model, r.Server = str(), str(), str(), str(), str(), str()
		r.Calls, r.InputTokens, r.OutputTokens = sv(), sv(), sv()
		if bad {
			return fail()
		}
	}
	if len(b) != 0 {
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
	if len(b) == 0 || b[0] != usageDayFormat {
		return fail()
	}
	b = b[1:]
	bad := false
	uv := func() uint64 {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	sv := func() int64 {
		v, n := binary.Varint(b)
		if n <= 0 {
			bad = true
			return 0
		}
		b = b[n:]
		return v
	}
	ns := uv()
	if bad || ns > uint64(len(b)) {
		return fail()
	}
	// The strings stay in b until a new principal needs them.
	strs := make([][]byte, ns)
	for i := range strs {
		l := uv()
		if bad || l > uint64(len(b)) {
			return fail()
		}
		strs[i], b = b[:l:l], b[l:]
	}
	nr := uv()
	if bad || nr > uint64(len(b)) {
		return fail()
	}
	for range nr {
		id := int64(uv())
		var idx [6]uint64
		for j := range idx {
			if idx[j] = uv(); idx[j] >= ns {
				bad = true
			}
		}
		sv() // calls
		n := sv() + sv()
		if bad {
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
	if len(b) != 0 {
		return fail()
	}
	return nil
}
