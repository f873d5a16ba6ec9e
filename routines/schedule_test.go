package routines

import (
	"strings"
	"testing"
	"time"
)

func mustLoc(t *testing.T, name string) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// runsBetween lists the runs of s from its first after from up to to, as
// the scheduler chains them.
func runsBetween(s Schedule, from, to time.Time) []time.Time {
	var out []time.Time
	t := s.First(from)
	for !t.IsZero() && !t.After(to) {
		out = append(out, t)
		t = s.After(t, t)
	}
	return out
}

func TestDailyCronKeepsLocalTimeAcrossDST(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	for _, tc := range []struct {
		name     string
		from, to time.Time
		// wantUTC is the UTC hour of the run before and after the change.
		beforeUTC, afterUTC int
	}{
		// 2026-03-29: clocks go from 2:00 CET to 3:00 CEST.
		{"spring forward", time.Date(2026, 3, 25, 12, 0, 0, 0, time.UTC), time.Date(2026, 4, 2, 12, 0, 0, 0, time.UTC), 8, 7},
		// 2026-10-25: clocks go back from 3:00 CEST to 2:00 CET.
		{"fall back", time.Date(2026, 10, 21, 12, 0, 0, 0, time.UTC), time.Date(2026, 10, 29, 12, 0, 0, 0, time.UTC), 7, 8},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule("0 9 * * *", paris, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			runs := runsBetween(s, tc.from, tc.to)
			if len(runs) != 8 {
				t.Fatalf("got %d runs in 8 days, want 8: %v", len(runs), runs)
			}
			days := map[string]bool{}
			for _, r := range runs {
				l := r.In(paris)
				if l.Hour() != 9 || l.Minute() != 0 {
					t.Errorf("run at %s local, want 09:00", l)
				}
				days[l.Format("2006-01-02")] = true
			}
			if len(days) != 8 {
				t.Errorf("runs on %d distinct days, want 8: %v", len(days), runs)
			}
			if got := runs[0].UTC().Hour(); got != tc.beforeUTC {
				t.Errorf("first run at %02d UTC, want %02d", got, tc.beforeUTC)
			}
			if got := runs[len(runs)-1].UTC().Hour(); got != tc.afterUTC {
				t.Errorf("last run at %02d UTC, want %02d", got, tc.afterUTC)
			}
		})
	}
}

// A time inside the hour that is skipped or repeated still runs once a
// day: robfig/cron alone would skip the day of the spring change and run
// twice on the autumn one.
func TestCronInTheChangingHourRunsOnceADay(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	for _, tc := range []struct {
		name     string
		from, to time.Time
	}{
		{"spring forward", time.Date(2026, 3, 27, 12, 0, 0, 0, time.UTC), time.Date(2026, 3, 31, 12, 0, 0, 0, time.UTC)},
		{"fall back", time.Date(2026, 10, 23, 12, 0, 0, 0, time.UTC), time.Date(2026, 10, 27, 12, 0, 0, 0, time.UTC)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := ParseSchedule("30 2 * * *", paris, tc.from)
			if err != nil {
				t.Fatal(err)
			}
			runs := runsBetween(s, tc.from, tc.to)
			perDay := map[string]int{}
			for _, r := range runs {
				perDay[r.In(paris).Format("2006-01-02")]++
			}
			if len(runs) != 4 || len(perDay) != 4 {
				t.Fatalf("got runs %v (per local day %v), want one on each of 4 days", runs, perDay)
			}
			for i := 1; i < len(runs); i++ {
				if !runs[i].After(runs[i-1]) {
					t.Errorf("run %d at %s is not after %s", i, runs[i], runs[i-1])
				}
			}
		})
	}
}

func TestParseScheduleForms(t *testing.T) {
	paris := mustLoc(t, "Europe/Paris")
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC) // 12:00 in Paris
	for _, tc := range []struct {
		in, want string
		first    time.Time
	}{
		{"0 9 * * 1-5", "cron 0 9 * * 1-5", time.Date(2026, 6, 2, 7, 0, 0, 0, time.UTC)},
		{"@daily", "cron @daily", time.Date(2026, 6, 1, 22, 0, 0, 0, time.UTC)},
		{"every 2h", "every 2h", now.Add(2 * time.Hour)},
		{"every 90 minutes", "every 1h30m", now.Add(90 * time.Minute)},
		{"every day", "every 24h", now.Add(24 * time.Hour)},
		{"in 20m", "at 2026-06-01T10:20:00Z", now.Add(20 * time.Minute)},
		{"at 2026-06-03 09:00", "at 2026-06-03T07:00:00Z", time.Date(2026, 6, 3, 7, 0, 0, 0, time.UTC)},
		{"at 11:30", "at 2026-06-02T09:30:00Z", time.Date(2026, 6, 2, 9, 30, 0, 0, time.UTC)},
		{"at 2026-06-03T09:00:00Z", "at 2026-06-03T09:00:00Z", time.Date(2026, 6, 3, 9, 0, 0, 0, time.UTC)},
	} {
		s, err := ParseSchedule(tc.in, paris, now)
		if err != nil {
			t.Errorf("ParseSchedule(%q): %v", tc.in, err)
			continue
		}
		if s.String() != tc.want {
			t.Errorf("ParseSchedule(%q) = %q, want %q", tc.in, s, tc.want)
		}
		if got := s.First(now); !got.Equal(tc.first) {
			t.Errorf("%q: first run %s, want %s", tc.in, got, tc.first)
		}
		// What is stored parses back to the same schedule.
		back, err := ParseSchedule(s.String(), paris, now.Add(time.Hour))
		if err != nil || back.String() != s.String() {
			t.Errorf("%q stored as %q reads back as %q (%v)", tc.in, s, back, err)
		}
	}
	for _, bad := range []string{"", "tomorrow", "61 * * * *", "every", "every -2h", "every 3 fortnights", "@every 1h",
		"CRON_TZ=UTC 0 9 * * *", "at someday", "in soon"} {
		_, err := ParseSchedule(bad, paris, now)
		if err == nil {
			t.Errorf("ParseSchedule(%q) succeeded", bad)
			continue
		}
		if !strings.Contains(err.Error(), "want") && !strings.Contains(err.Error(), "give") && !strings.Contains(err.Error(), "write") && !strings.Contains(err.Error(), "time zone") &&
			!strings.Contains(err.Error(), "positive") {
			t.Errorf("ParseSchedule(%q) error says not what to write: %v", bad, err)
		}
	}
}

func TestMinGap(t *testing.T) {
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"* * * * *": time.Minute, "*/5 * * * *": 5 * time.Minute, "0 9 * * *": 24 * time.Hour,
		"0 9,10 * * *": time.Hour, "every 7m": 7 * time.Minute,
	} {
		s, err := ParseSchedule(in, time.UTC, now)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.MinGap(now); got != want {
			t.Errorf("MinGap(%q) = %s, want %s", in, got, want)
		}
	}
}

func FuzzParseSchedule(f *testing.F) {
	for _, s := range []string{"0 9 * * 1-5", "every 2h", "in 3 days", "at 2026-01-01 00:00", "@weekly", "at 25:99"} {
		f.Add(s)
	}
	now := time.Date(2026, 6, 1, 10, 0, 0, 0, time.UTC)
	paris, err := time.LoadLocation("Europe/Paris")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		s, err := ParseSchedule(in, paris, now)
		if err != nil {
			return
		}
		first := s.First(now)
		if first.IsZero() {
			return
		}
		if next := s.After(first, first); !next.IsZero() && !next.After(first) {
			t.Fatalf("%q: run after %s is %s", in, first, next)
		}
	})
}
