// Package pki is Warden's certificate authority and the parsing of every
// piece of X.509 material that reaches Warden from outside: CSRs from agents,
// CAs and HTTPS bundles uploaded by operators, CA bundles for webhooks and
// databases.
//
// Errors caused by the input are *InvalidError values whose Field names the
// request field the input came from, so the API layer can answer
// InvalidArgument with a precise message; every other error is internal.
package pki
