// Package matrix holds the end-to-end authorisation matrix test: every RPC of every service, called as
// every kind of caller against a real wardend, with the expected outcome written down independently of
// the authorisation table it checks.
package matrix
