package pki

import (
	"errors"
	"fmt"
)

// InvalidError reports input that was rejected, as opposed to a failure of
// Warden itself. Field is the snake_case API field the input arrives in
// ("csr_pem", "bundle_pem", …); an API whose field has another name relabels
// it with WithField.
type InvalidError struct {
	Field  string
	Reason string
	// Err is the underlying cause when there is one, for errors.Is/As.
	Err error
}

func (e *InvalidError) Error() string {
	if e.Field == "" {
		return e.Reason
	}
	return e.Field + ": " + e.Reason
}

func (e *InvalidError) Unwrap() error { return e.Err }

// WithField returns err with the field of its InvalidError replaced by field;
// any other error is returned unchanged.
func WithField(err error, field string) error {
	var inv *InvalidError
	if !errors.As(err, &inv) {
		return err
	}
	relabelled := *inv
	relabelled.Field = field
	return &relabelled
}

func invalidf(field, format string, args ...any) *InvalidError {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...)}
}

// invalidErr keeps cause for errors.Is/As and shows its text, because the
// operator needs to know, say, which x509 check failed.
func invalidErr(field string, cause error, format string, args ...any) *InvalidError {
	return &InvalidError{Field: field, Reason: fmt.Sprintf(format, args...) + ": " + cause.Error(), Err: cause}
}
