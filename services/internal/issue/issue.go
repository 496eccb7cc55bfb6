// Package issue holds the finding type shared by Warden's policy validators
// (TLS, Web Admin headers, database SSL, network zones), so the policy
// service can report all of them the same way.
package issue

import "fmt"

// Issue is one finding of a validator.
//
// Validators return errors and warnings as two separate lists; Downgrade marks
// a finding that weakens the protection relative to Warden's defaults. For an
// error it means the value is well-formed and would be accepted if the caller
// explicitly acknowledges a downgrade; an error with Downgrade false can never
// be accepted (malformed input, header injection, a broken security model).
type Issue struct {
	// Field names the offending setting in snake_case, as in the policy API
	// (e.g. "strict_transport_security", "zones[2].cidrs[0]").
	Field     string
	Message   string
	Downgrade bool
}

func (i Issue) String() string {
	if i.Downgrade {
		return fmt.Sprintf("%s: %s (downgrade)", i.Field, i.Message)
	}
	return fmt.Sprintf("%s: %s", i.Field, i.Message)
}
