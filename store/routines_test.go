package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/talonhq/talon/agent"
	"github.com/talonhq/talon/store"
)

// The routines' records: a per-owner limit, a run recorded once per
// routine and time whoever asks, a routine moved on by one of two
// schedulers, failures counted in a row, time zones per principal.
func TestRoutineRecords(t *testing.T) {
	db, _ := open(t)
	ctx := context.Background()
	owner := alice.Principal
	other := agent.Principal{Platform: "slack", Workspace: "T1", User: "U2"}
	at := t0.Add(time.Hour)
	r, err := db.CreateRoutine(ctx, store.Routine{Owner: owner, Name: "n", Schedule: "every 1h", TZ: "UTC", Prompt: "p",
		Dest: "here", Channel: "C1", ReplyTo: "r", NextAt: at}, 2)
	if err != nil {
		t.Fatal(err)
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
	if got, _ := db.Routines(ctx, &owner); len(got) != 2 {
		t.Errorf("owner's routines: %d, want 2", len(got))
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

	next := at.Add(time.Hour)
	missed := []time.Time{at.Add(-2 * time.Hour), at.Add(-time.Hour)}
	run, moved, started, err := db.AdvanceRoutine(ctx, r.ID, at, missed, at, next)
	if err != nil || !moved || !started || run.ID == 0 {
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
	if got := getRoutine(t, db, r.ID); !got.NextAt.Equal(next) || got.State != "active" {
		t.Errorf("after the run: %+v", got)
	}
	runs, _ := db.RoutineRuns(ctx, r.ID, 10)
	if len(runs) != 3 || runs[0].State != "started" || runs[1].State != "missed" || runs[2].State != "missed" {
		t.Errorf("runs = %+v, want one started and two missed", runs)
	}
	opened, _ := db.OpenRoutineRuns(ctx)
	if len(opened) != 1 || opened[0].ID != run.ID || opened[0].Inbound != 0 || opened[0].InboundState != "" {
		t.Errorf("open runs = %+v", opened)
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

	// A one-off moved on with no next run is done.
	r2, _ := db.CreateRoutine(ctx, store.Routine{Owner: other, Schedule: "at x", Prompt: "once", Dest: "here", NextAt: at}, 0)
	if _, moved, _, err := db.AdvanceRoutine(ctx, r2.ID, at, nil, at, time.Time{}); err != nil || !moved {
		t.Fatal(err)
	}
	if got := getRoutine(t, db, r2.ID); got.State != "done" || !got.NextAt.IsZero() {
		t.Errorf("one-off after its run: %+v", got)
	}
	if err := db.SetRoutineState(ctx, r.ID, "paused", "because", nil); err != nil {
		t.Fatal(err)
	}
	if due, _ := db.DueRoutines(ctx, next); len(due) != 2 {
		t.Errorf("due with one paused and one done: %d, want the other two", len(due))
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
	if got, _ := db.TimeZone(ctx, other); got != "" {
		t.Errorf("another principal's zone: %q", got)
	}
}

func getRoutine(t *testing.T, db *store.DB, id int64) store.Routine {
	t.Helper()
	r, err := db.GetRoutine(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return r
}
