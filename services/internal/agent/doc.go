// Package agent assembles warden-agent: the node core (bootstrap, streams, files, renewal, cache), the
// app reloader, the status file, the optional fronts and, on a Coreapp, the mesh prober. main only
// parses flags and calls Run.
//
// What the agent writes under --data-dir (default /usr/local/waent/data):
//
//	certs/                      0700 (0750 and the --group with a group)
//	  ca-bundle.crt             every trusted root (0644)
//	  crl.pem                   the current CRLs, one per trusted CA
//	  identity.{crt,key}        the node's mTLS identity towards Warden
//	  webapp-https.{crt,key}    Webapp: HTTPS server certificate (or the operator's uploaded one)
//	  coreapp-communication.{crt,key}, coreapp-control.{crt,key}   Coreapp
//	  db-client.{crt,key}       database client certificate (WA_DB_SSL_CERT/KEY)
//	  db-ca.crt                 database CA (WA_DB_SSL_CA), when set
//	  webhook-ca.crt            Coreapp: the webhook CA bundle, when set
//	  <secret>.json             every secret's staged, active and retiring versions (wa-secret.json)
//	  <secret>.secret           a generic secret's active value, raw
//	warden.env                  the app's env file (0600, 0640 with a group)
//	.warden-agent/              the agent's private state (0700): sealed cache, node key, status.json
//
// Keys and secrets are 0600 (0640 with a group), everything else 0644. Every .crt holds the leaf
// followed by its chain (without the root). Keys are generated on the node and never leave it.
//
// Encodings. WA_SECRET in warden.env is the active version's raw bytes as lowercase hex (64 characters
// for the generated 32 bytes): env files cannot carry arbitrary bytes, and hex survives both docker's
// --env-file and systemd's EnvironmentFile unchanged. The values in <secret>.json use the same hex
// encoding. The other variables (WA_WEB_SECURITY_LEVEL, WA_DB_SSL_KEY/CERT/CA/VERIFY on a Webapp,
// WA_DB_CONNECTION_OPTION on a Coreapp) are the policy's rendering for the node, verbatim.
//
// Fronts. A front endpoint admits only source addresses in the networks of the zones the policy lets
// reach it; an endpoint without networks admits nobody. A policy that defines no networks at all
// therefore closes every front: the agent logs a warning and shows it in its status rather than
// opening up.
package agent
