package vault

import "time"

// Reason says why a credential use was allowed or refused. The set is
// closed: Reasons lists every value.
type Reason string

// Reasons for audit events.
const (
	// ReasonInjected: the credential was added to a request.
	ReasonInjected Reason = "injected"
	// ReasonNotGranted: the tool's manifest does not grant this name.
	ReasonNotGranted Reason = "not_granted"
	// ReasonNoEntry: the user has no entry of this name.
	ReasonNoEntry Reason = "no_entry"
	// ReasonHostNotBound: the request's host is not one the entry is bound to.
	ReasonHostNotBound Reason = "host_not_bound"
	// ReasonInvalidHost: the request's host did not normalise.
	ReasonInvalidHost Reason = "invalid_host"
	// ReasonNotHTTPS: the request was not over HTTPS.
	ReasonNotHTTPS Reason = "not_https"
	// ReasonLeakDetected: the outbound request already carried a secret
	// value or a known token format.
	ReasonLeakDetected Reason = "leak_detected"
	// ReasonRedirectHostChanged: a redirect left the bound host, so the
	// credential was dropped.
	ReasonRedirectHostChanged Reason = "redirect_host_changed"
	// ReasonOpenFailed: the entry did not open (wrong key or tampered).
	ReasonOpenFailed Reason = "open_failed"
	// ReasonMergedDuplicate: the entry was removed when its user was
	// renamed (Vault.RenameUsers), because the new user had a newer entry
	// of the same name, which was kept.
	ReasonMergedDuplicate Reason = "merged_duplicate"
)

// Reasons returns every Reason, in a fixed order.
func Reasons() []Reason {
	return []Reason{
		ReasonInjected, ReasonNotGranted, ReasonNoEntry, ReasonHostNotBound, ReasonInvalidHost,
		ReasonNotHTTPS, ReasonLeakDetected, ReasonRedirectHostChanged, ReasonOpenFailed, ReasonMergedDuplicate,
	}
}

// Valid reports whether r is one of Reasons.
func (r Reason) Valid() bool {
	for _, x := range Reasons() {
		if r == x {
			return true
		}
	}
	return false
}

// AuditEvent records one attempt to use a credential. It holds names and
// hosts, never a value.
type AuditEvent struct {
	Time time.Time
	// User is the owner, "platform:workspace:user".
	User string
	// Name is the credential name the tool asked for.
	Name string
	// Host is the normalised request host (or the raw one when it did not
	// normalise, with ReasonInvalidHost).
	Host string
	// Tool is the calling tool's name.
	Tool    string
	Allowed bool
	Reason  Reason
}
