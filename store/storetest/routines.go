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
// routine` reads. It restates routines.Store because store packages may not
// import the features above them (DESIGN.md; TestImportsFollowDesignDirection).
type RoutineStore interface {
	CreateRoutine(ctx context.Context, r store.Routine, max int) (store.Routine, error)
	Routines(ctx context.Context, owner *agent.Principal) ([]store.Routine, error)
	GetRoutine(ctx context.Context, id int64) (store.Routine, error)
	DueRoutines(ctx context.Context, now time.Time) ([]store.Routine, error)
	DeleteRoutine(ctx context.Context, id int64) error
	SetRoutineState(ctx context.Context, id int64, state, reason string, next *time.Time) error
	OweRoutineNotice(ctx context.Context, id int64, text string, at time.Time) error
	DueRoutineNotices(ctx context.Context, now time.Time) ([]store.RoutineNotice, error)
	ClaimRoutineNotice(ctx context.Context, id int64, at, next time.Time) (bool, error)
	ClearRoutineNotice(ctx context.Context, id int64, at time.Time) error
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
	{"RoutineNotices", testRoutineNotices},
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

// A notice owed to a routine's owner: due at its time, each attempt
// claimed by one of two processes, kept over a restart until it is
// cleared as delivered, replaced by a newer one, cleared by a resume, and
// gone with its routine.
func testRoutineNotices(t *testing.T, e *env) {
	db := e.db
	ctx := context.Background()
	at := t0.Add(time.Hour)
	r, err := db.CreateRoutine(ctx, store.Routine{Owner: alice.Principal, Schedule: "every 1h", Prompt: "p", Dest: "here", NextAt: at}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if due, err := db.DueRoutineNotices(ctx, at); err != nil || len(due) != 0 {
		t.Fatalf("notices owed before any: %+v, %v", due, err)
	}
	if err := db.SetRoutineState(ctx, r.ID, "paused", "gone", nil); err != nil {
		t.Fatal(err)
	}
	if err := db.OweRoutineNotice(ctx, r.ID, "I paused <it> & \"why\"", at); err != nil {
		t.Fatal(err)
	}
	if err := db.OweRoutineNotice(ctx, 987654, "x", at); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("owe a notice of an unknown routine: %v, want ErrNotFound", err)
	}
	if due, _ := db.DueRoutineNotices(ctx, at.Add(-time.Second)); len(due) != 0 {
		t.Errorf("due before its time: %+v", due)
	}
	want := store.RoutineNotice{Routine: r.ID, Text: "I paused <it> & \"why\"", At: at}
	due, err := db.DueRoutineNotices(ctx, at)
	if err != nil || len(due) != 1 || due[0] != want {
		t.Fatalf("due = %+v, %v; want [%+v]", due, err, want)
	}
	// Two processes take the same attempt: one gets it.
	retry := at.Add(30 * time.Second)
	var wg sync.WaitGroup
	var claimed atomic.Int32
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if ok, err := db.ClaimRoutineNotice(ctx, r.ID, at, retry); err != nil {
				t.Error(err)
			} else if ok {
				claimed.Add(1)
			}
		}()
	}
	wg.Wait()
	if n := claimed.Load(); n != 1 {
		t.Fatalf("the attempt was claimed %d times, want once", n)
	}
	// The attempt failed: after a restart it is owed at the retry's time.
	db = e.reopen(t)
	if due, _ := db.DueRoutineNotices(ctx, retry.Add(-time.Millisecond)); len(due) != 0 {
		t.Errorf("due before the retry: %+v", due)
	}
	want.At, want.Tries = retry, 1
	if due, _ := db.DueRoutineNotices(ctx, retry); len(due) != 1 || due[0] != want {
		t.Fatalf("due at the retry = %+v, want [%+v]", due, want)
	}
	// A newer notice replaces it; clearing with the older claim leaves it.
	if err := db.OweRoutineNotice(ctx, r.ID, "newer", retry.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := db.ClearRoutineNotice(ctx, r.ID, retry); err != nil {
		t.Fatal(err)
	}
	newer := store.RoutineNotice{Routine: r.ID, Text: "newer", At: retry.Add(time.Second)}
	if due, _ := db.DueRoutineNotices(ctx, retry.Add(time.Hour)); len(due) != 1 || due[0] != newer {
		t.Fatalf("after a newer notice = %+v, want [%+v]", due, newer)
	}
	if ok, _ := db.ClaimRoutineNotice(ctx, r.ID, retry, retry.Add(time.Minute)); ok {
		t.Error("claimed the replaced notice's attempt")
	}
	// Delivered: cleared.
	sent := retry.Add(2 * time.Minute)
	if ok, err := db.ClaimRoutineNotice(ctx, r.ID, newer.At, sent); err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	if err := db.ClearRoutineNotice(ctx, r.ID, sent); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutineNotices(ctx, sent.Add(time.Hour)); len(due) != 0 {
		t.Errorf("owed after delivery: %+v", due)
	}
	// A resume clears one owed; a pause keeps it; a delete removes it.
	if err := db.OweRoutineNotice(ctx, r.ID, "again", sent); err != nil {
		t.Fatal(err)
	}
	if err := db.SetRoutineState(ctx, r.ID, "paused", "still", nil); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutineNotices(ctx, sent); len(due) != 1 {
		t.Errorf("owed after a pause: %+v, want the notice", due)
	}
	if err := db.SetRoutineState(ctx, r.ID, "active", "", nil); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutineNotices(ctx, sent.Add(time.Hour)); len(due) != 0 {
		t.Errorf("owed after a resume: %+v", due)
	}
	if err := db.OweRoutineNotice(ctx, r.ID, "before delete", sent); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteRoutine(ctx, r.ID); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutineNotices(ctx, sent.Add(time.Hour)); len(due) != 0 {
		t.Errorf("owed after a delete: %+v", due)
	}
}
