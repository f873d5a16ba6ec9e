package storetest

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// RoutineStore is the routines' storage (routines.Store) and what `talon
// routine` reads.
type RoutineStore interface {
	CreateRoutine(ctx context.Context, r store.Routine, max int) (store.Routine, error)
	Routines(ctx context.Context, owner *agent.Principal) ([]store.Routine, error)
	GetRoutine(ctx context.Context, id int64) (store.Routine, error)
	DueRoutines(ctx context.Context, now time.Time) ([]store.Routine, error)
	DeleteRoutine(ctx context.Context, id int64) error
	SetRoutineState(ctx context.Context, id int64, state, reason string, next *time.Time) error
	AdvanceRoutine(ctx context.Context, id int64, from time.Time, missed []time.Time, run, next time.Time) (store.RoutineRun, bool, bool, error)
	StartRoutineRun(ctx context.Context, id int64, scheduled time.Time) (store.RoutineRun, bool, error)
	SetRunInbound(ctx context.Context, run int64, in agent.InboundID) error
	OpenRoutineRuns(ctx context.Context) ([]store.RoutineRun, error)
	FinishRoutineRun(ctx context.Context, run int64, state, reason string) (int, bool, error)
	RoutineRuns(ctx context.Context, id int64, limit int) ([]store.RoutineRun, error)
	TimeZone(ctx context.Context, p agent.Principal) (string, error)
	SetTimeZone(ctx context.Context, p agent.Principal, tz string) error
}

var routineTests = []test{
	{"RoutineRecords", testRoutineRecords},
	{"RoutineRunsOnceAcrossReplicas", testRoutineRunsOnceAcrossReplicas},
	{"RoutineLimitAcrossReplicas", testRoutineLimitAcrossReplicas},
}

func getRoutine(tb testing.TB, db Store, id int64) store.Routine {
	tb.Helper()
	r, err := db.GetRoutine(context.Background(), id)
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// The routines' records: a per-owner limit, a run recorded once per
// routine and time whoever asks, a routine moved on by one of two
// schedulers, failures counted in a row, pause and resume, time zones per
// principal; all of it after a restart too.
func testRoutineRecords(t *testing.T, e *env) {
	db := e.db
	ctx := context.Background()
	owner := alice.Principal
	other := bob.Principal
	at := t0.Add(time.Hour)
	r, err := db.CreateRoutine(ctx, store.Routine{Owner: owner, Name: "n", Schedule: "every 1h", TZ: "Europe/Paris", Prompt: "p",
		Dest: "here", Channel: "C1", ReplyTo: "r", NotifyTo: "D1", NextAt: at}, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := store.Routine{ID: r.ID, Owner: owner, Name: "n", Schedule: "every 1h", TZ: "Europe/Paris", Prompt: "p",
		Dest: "here", Channel: "C1", ReplyTo: "r", NotifyTo: "D1", State: "active", NextAt: at, CreatedAt: t0}
	if r != want {
		t.Errorf("created %+v, want %+v", r, want)
	}
	if got := getRoutine(t, db, r.ID); got != want {
		t.Errorf("read back %+v, want %+v", got, want)
	}
	if _, err := db.CreateRoutine(ctx, store.Routine{Owner: owner, Schedule: "every 1h", Prompt: "p2", Dest: "dm", NextAt: at}, 2); err != nil {
		t.Fatal(err)
	}
	if _, err := db.CreateRoutine(ctx, store.Routine{Owner: owner, Schedule: "every 1h", Prompt: "p3", Dest: "here", NextAt: at}, 2); !errors.Is(err, store.ErrRoutineLimit) {
		t.Errorf("third routine over a limit of 2: %v, want ErrRoutineLimit", err)
	}
	if _, err := db.CreateRoutine(ctx, store.Routine{Owner: other, Schedule: "every 1h", Prompt: "p", Dest: "here", NextAt: at}, 2); err != nil {
		t.Errorf("another owner's routine: %v", err)
	}
	if _, err := db.CreateRoutine(ctx, store.Routine{Owner: other, Schedule: "every 1h", Prompt: "p", Dest: "nowhere", NextAt: at}, 2); err == nil {
		t.Error("a routine with dest nowhere was created")
	}
	if got, _ := db.Routines(ctx, &owner); len(got) != 2 || got[0].ID != r.ID {
		t.Errorf("owner's routines: %+v, want 2, oldest first", got)
	}
	if got, _ := db.Routines(ctx, nil); len(got) != 3 {
		t.Errorf("all routines: %d, want 3", len(got))
	}
	if due, _ := db.DueRoutines(ctx, at.Add(-time.Millisecond)); len(due) != 0 {
		t.Errorf("due before their time: %d", len(due))
	}
	if due, _ := db.DueRoutines(ctx, at); len(due) != 3 {
		t.Errorf("due at their time: %d, want 3", len(due))
	}
	if _, err := db.GetRoutine(ctx, 987654); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("unknown routine: %v, want ErrNotFound", err)
	}

	next := at.Add(time.Hour)
	missed := []time.Time{at.Add(-2 * time.Hour), at.Add(-time.Hour)}
	run, moved, started, err := db.AdvanceRoutine(ctx, r.ID, at, missed, at, next)
	if err != nil || !moved || !started || run.ID == 0 || run.Routine != r.ID || !run.ScheduledAt.Equal(at) || run.State != "started" {
		t.Fatalf("AdvanceRoutine = %+v, %v, %v, %v", run, moved, started, err)
	}
	// The second scheduler, which read the same next run, moves nothing.
	if _, moved, started, err := db.AdvanceRoutine(ctx, r.ID, at, nil, at, next); err != nil || moved || started {
		t.Errorf("second AdvanceRoutine from the same time: moved %v, started %v, %v", moved, started, err)
	}
	// A run for a recorded time is not recorded again.
	if _, started, err := db.StartRoutineRun(ctx, r.ID, at); err != nil || started {
		t.Errorf("StartRoutineRun at a recorded time: started %v, %v", started, err)
	}
	if got := getRoutine(t, db, r.ID); !got.NextAt.Equal(next) || got.State != "active" || !got.LastAt.Equal(at) || got.LastState != "started" {
		t.Errorf("after the run: %+v", got)
	}
	runs, _ := db.RoutineRuns(ctx, r.ID, 10)
	if len(runs) != 3 || runs[0].State != "started" || runs[1].State != "missed" || runs[2].State != "missed" ||
		!runs[1].ScheduledAt.Equal(missed[1]) {
		t.Errorf("runs = %+v, want one started and two missed", runs)
	}
	opened, _ := db.OpenRoutineRuns(ctx)
	if len(opened) != 1 || opened[0].ID != run.ID || opened[0].Inbound != 0 || opened[0].InboundState != "" {
		t.Errorf("open runs = %+v", opened)
	}
	// The run is handed to the runtime; a restart finds it with its turn.
	q := accept(t, db, inbound("routine-1", alice))
	if err := db.SetRunInbound(ctx, run.ID, q.ID); err != nil {
		t.Fatal(err)
	}
	db = e.reopen(t)
	opened, _ = db.OpenRoutineRuns(ctx)
	if len(opened) != 1 || opened[0].Inbound != q.ID || opened[0].InboundState != "queued" || opened[0].ReplyState != "" {
		t.Errorf("open runs after a restart = %+v, want the run with its queued inbound", opened)
	}
	if n, finished, err := db.FinishRoutineRun(ctx, run.ID, "done", ""); err != nil || !finished || n != 0 {
		t.Errorf("finish the run: %d, %v, %v", n, finished, err)
	}
	if _, _, err := db.FinishRoutineRun(ctx, run.ID, "started", ""); err == nil {
		t.Error("a run finished as started")
	}
	if opened, _ := db.OpenRoutineRuns(ctx); len(opened) != 0 {
		t.Errorf("open runs after it finished: %+v", opened)
	}

	// Failures in a row: two, a success resets, then one.
	for i, st := range []string{"failed", "failed", "done", "failed"} {
		rr, started, err := db.StartRoutineRun(ctx, r.ID, at.Add(time.Duration(i+1)*time.Minute))
		if err != nil || !started {
			t.Fatal(err)
		}
		n, finished, err := db.FinishRoutineRun(ctx, rr.ID, st, "why")
		want := []int{1, 2, 0, 1}[i]
		if err != nil || !finished || n != want {
			t.Errorf("run %d %s: failures %d (finished %v, %v), want %d", i, st, n, finished, err, want)
		}
		if _, finished, _ := db.FinishRoutineRun(ctx, rr.ID, st, "again"); finished {
			t.Errorf("run %d finished twice", i)
		}
	}
	if got := getRoutine(t, db, r.ID); got.Failures != 1 || got.LastState != "failed" {
		t.Errorf("after the runs: failures %d, last %q", got.Failures, got.LastState)
	}

	// A one-off moved on with no next run is done.
	r2, _ := db.CreateRoutine(ctx, store.Routine{Owner: other, Schedule: "at x", Prompt: "once", Dest: "here", NextAt: at}, 0)
	if _, moved, _, err := db.AdvanceRoutine(ctx, r2.ID, at, nil, at, time.Time{}); err != nil || !moved {
		t.Fatal(err)
	}
	if got := getRoutine(t, db, r2.ID); got.State != "done" || !got.NextAt.IsZero() {
		t.Errorf("one-off after its run: %+v", got)
	}
	// Paused: not due, not moved on, reason kept; resumed: failures reset.
	if err := db.SetRoutineState(ctx, r.ID, "paused", "because", nil); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutines(ctx, next); len(due) != 2 {
		t.Errorf("due with one paused and one done: %d, want the other two", len(due))
	}
	if _, moved, _, _ := db.AdvanceRoutine(ctx, r.ID, next, nil, next, next.Add(time.Hour)); moved {
		t.Error("a paused routine was moved on")
	}
	if got := getRoutine(t, db, r.ID); got.State != "paused" || got.Reason != "because" || got.Failures != 1 {
		t.Errorf("paused: %+v", got)
	}
	later := next.Add(5 * time.Hour)
	if err := db.SetRoutineState(ctx, r.ID, "active", "", &later); err != nil {
		t.Fatal(err)
	}
	if got := getRoutine(t, db, r.ID); got.State != "active" || got.Reason != "" || got.Failures != 0 || !got.NextAt.Equal(later) {
		t.Errorf("resumed: %+v", got)
	}
	if err := db.SetRoutineState(ctx, 987654, "paused", "", nil); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("pause an unknown routine: %v, want ErrNotFound", err)
	}
	if err := db.DeleteRoutine(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRoutine(ctx, r.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("deleting again: %v, want ErrNotFound", err)
	}
	if runs, _ := db.RoutineRuns(ctx, r.ID, 10); len(runs) != 0 {
		t.Errorf("runs of a deleted routine: %d", len(runs))
	}

	if tz, err := db.TimeZone(ctx, owner); err != nil || tz != "" {
		t.Errorf("zone before one is set: %q, %v", tz, err)
	}
	for _, tz := range []string{"Europe/Paris", "America/New_York", ""} {
		if err := db.SetTimeZone(ctx, owner, tz); err != nil {
			t.Fatal(err)
		}
		if got, _ := db.TimeZone(ctx, owner); got != tz {
			t.Errorf("zone = %q, want %q", got, tz)
		}
	}
	if err := db.SetTimeZone(ctx, owner, "Asia/Tokyo"); err != nil {
		t.Fatal(err)
	}
	if got, _ := e.reopen(t).TimeZone(ctx, owner); got != "Asia/Tokyo" {
		t.Errorf("zone after a restart = %q", got)
	}
	if got, _ := e.db.TimeZone(ctx, other); got != "" {
		t.Errorf("another principal's zone: %q", got)
	}
}

// Two replicas' schedulers that see the same routines due at once, and an
// operator's run-now asked of both: every run starts exactly once.
func testRoutineRunsOnceAcrossReplicas(t *testing.T, e *env) {
	ctx := context.Background()
	dbs := []Store{e.db, e.replica(t)}
	at := t0.Add(time.Minute)
	const routines = 6
	ids := make([]int64, routines)
	for i := range ids {
		r, err := e.db.CreateRoutine(ctx, store.Routine{Owner: alice.Principal, Schedule: "every 1h", Prompt: "p", Dest: "here", NextAt: at}, 0)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = r.ID
	}
	var (
		wg                   sync.WaitGroup
		moved, started, runs atomic.Int64
		mu                   sync.Mutex
		startedBy            = map[int64]int{}
	)
	for _, db := range dbs {
		for range 2 { // two claimers per replica
			wg.Go(func() {
				due, err := db.DueRoutines(ctx, at)
				if err != nil {
					t.Error(err)
					return
				}
				for _, r := range due {
					run, m, s, err := db.AdvanceRoutine(ctx, r.ID, r.NextAt, []time.Time{at.Add(-time.Hour)}, r.NextAt, r.NextAt.Add(time.Hour))
					if err != nil {
						t.Errorf("advance %d: %v", r.ID, err)
						continue
					}
					if m {
						moved.Add(1)
					}
					if s {
						started.Add(1)
						mu.Lock()
						startedBy[run.Routine]++
						mu.Unlock()
					}
				}
				// run-now of the first routine at one time, asked of every replica.
				if _, s, err := db.StartRoutineRun(ctx, ids[0], at.Add(30*time.Second)); err != nil {
					t.Errorf("run now: %v", err)
				} else if s {
					runs.Add(1)
				}
			})
		}
	}
	wg.Wait()
	if moved.Load() != routines || started.Load() != routines || runs.Load() != 1 {
		t.Errorf("moved %d, started %d, run-now started %d; want %d, %d, 1", moved.Load(), started.Load(), runs.Load(), routines, routines)
	}
	for _, id := range ids {
		if startedBy[id] != 1 {
			t.Errorf("routine %d started %d times", id, startedBy[id])
		}
		rs, err := e.db.RoutineRuns(ctx, id, 10)
		want := 2 // the run and the missed one
		if id == ids[0] {
			want = 3
		}
		if err != nil || len(rs) != want {
			t.Errorf("routine %d's runs: %+v, %v; want %d", id, rs, err, want)
		}
	}
	if n := e.count(t, "routine_runs"); n != 2*routines+1 {
		t.Errorf("%d runs recorded, want %d", n, 2*routines+1)
	}
}

// Two replicas creating one owner's routines at once stop at the limit.
func testRoutineLimitAcrossReplicas(t *testing.T, e *env) {
	ctx := context.Background()
	dbs := []Store{e.db, e.replica(t)}
	const max = 3
	var (
		wg      sync.WaitGroup
		limited atomic.Int64
	)
	for i := range 10 {
		wg.Go(func() {
			_, err := dbs[i%2].CreateRoutine(ctx, store.Routine{Owner: bob.Principal, Schedule: "every 1h", Prompt: "p", Dest: "here", NextAt: t0}, max)
			switch {
			case errors.Is(err, store.ErrRoutineLimit):
				limited.Add(1)
			case err != nil:
				t.Errorf("create %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	rs, err := e.db.Routines(ctx, &bob.Principal)
	if err != nil || len(rs) != max || limited.Load() != 10-max {
		t.Errorf("%d routines, %d refused (%v); want %d and %d", len(rs), limited.Load(), err, max, 10-max)
	}
}
