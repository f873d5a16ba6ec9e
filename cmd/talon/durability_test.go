package main

import (
	"bufio"
	"database/sql"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite"

	"github.com/talonhq/talon/agent/llm/llmtest"
)

// TestDurabilityUnderSIGKILL loads the gateway, kills it with SIGKILL at
// random moments, restarts it, five rounds; then every accepted message has
// exactly one reply, delivered, in the order the messages were accepted.
func TestDurabilityUnderSIGKILL(t *testing.T) {
	if testing.Short() {
		t.Skip("kills and restarts the gateway five times")
	}
	srv := llmtest.NewServer(t, func(req llmtest.Request) llmtest.Response {
		return llmtest.Response{Text: "answer to " + req.LastUserText(), Delay: time.Duration(rand.IntN(4)) * time.Millisecond}
	})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	cfg := writeConfig(t, dir, baseConfig(data, "openai", srv.URL))
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))

	var printed strings.Builder
	sent := 0
	const rounds = 5
	for round := range rounds {
		cmd := exec.Command(os.Args[0], "run", "--config", cfg)
		cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
		stdin, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The reader tells when the first reply of this round is shown:
		// the gateway is then up and working, however long its start took
		// on a loaded machine, and the kill lands mid-flight.
		outDone := make(chan string)
		answered := make(chan struct{})
		go func() {
			var b strings.Builder
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if b.Len() == 0 {
					close(answered)
				}
				b.WriteString(sc.Text() + "\n")
			}
			if b.Len() == 0 {
				close(answered)
			}
			outDone <- b.String()
		}()
		stopWriting := make(chan struct{})
		wrote := make(chan int)
		go func() {
			n := 0
			defer func() { wrote <- n }()
			for {
				select {
				case <-stopWriting:
					return
				default:
				}
				if _, err := fmt.Fprintf(stdin, "r%d-m%d\n", round, n); err != nil {
					return
				}
				n++
			}
		}()
		select {
		case <-answered:
		case <-time.After(time.Minute):
			t.Fatalf("round %d: no reply within a minute of starting the gateway", round)
		}
		time.Sleep(time.Duration(rng.IntN(300)) * time.Millisecond) // let it work, then kill it mid-flight
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		close(stopWriting)
		stdin.Close()
		sent += <-wrote
		_ = cmd.Wait()
		printed.WriteString(<-outDone)
	}

	// A last start with no input finishes whatever was accepted.
	cmd := exec.Command(os.Args[0], "run", "--config", cfg)
	cmd.Env = append(os.Environ(), "TALON_TEST_MAIN=1")
	cmd.Stdin = strings.NewReader("")
	var out syncBuffer
	cmd.Stdout = &out
	cmd.Stderr = io.Discard
	if err := cmd.Run(); err != nil {
		t.Fatalf("final run: %v", err)
	}
	printed.WriteString(out.String())

	db, err := sql.Open("sqlite", "file:"+filepath.Join(data, "talon.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query(`SELECT i.id, i.text, i.state,
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id),
			(SELECT count(*) FROM outbound o WHERE o.inbound_id = i.id AND o.state = 'delivered'),
			coalesce((SELECT min(o.id) FROM outbound o WHERE o.inbound_id = i.id), 0)
		FROM inbound i ORDER BY i.id`)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	accepted, lastReply := 0, int64(0)
	for rows.Next() {
		var (
			id, replyID        int64
			text, state        string
			replies, delivered int
		)
		if err := rows.Scan(&id, &text, &state, &replies, &delivered, &replyID); err != nil {
			t.Fatal(err)
		}
		accepted++
		if state != "done" || replies != 1 || delivered != 1 {
			t.Errorf("inbound %d %q: state %s, %d replies, %d delivered; want done, 1, 1", id, text, state, replies, delivered)
		}
		if replyID <= lastReply {
			t.Errorf("inbound %d was answered out of order (reply %d after %d)", id, replyID, lastReply)
		}
		lastReply = replyID
		if n := strings.Count(printed.String(), "answer to "+text+"\n"); n < 1 {
			t.Errorf("the reply to %q never reached the channel", text)
		} else if n > 1 {
			// Possible only when a kill lands between showing a reply and
			// recording its delivery: at most once per kill.
			t.Logf("the reply to %q was shown %d times", text, n)
		}
	}
	if accepted == 0 {
		t.Fatal("no message was accepted; the test did not load the gateway")
	}
	dups := strings.Count(printed.String(), "\n") - accepted
	if dups > rounds {
		t.Errorf("%d replies shown more than once over %d kills", dups, rounds)
	}
	t.Logf("%d messages written to the pipe, %d accepted and answered exactly once in the database, %d duplicate displays over %d SIGKILLs", sent, accepted, dups, rounds)
}
