// Package config owns Talon's configuration: the Config type, its built-in
// defaults, loading it from a YAML file or from the environment, and
// validating it.
//
// Loading is strict. Unknown keys, duplicate keys, values of the wrong type
// and values out of bounds are all errors, and Load reports every problem it
// finds at once, each naming its key by full path (llm.api_key) and, when the
// value came from the file, its line.
//
// Credentials never live in the file: a scalar value may reference the
// environment as ${NAME} ($$ is a literal $), quoted or not, in a flow
// collection ({url: ${DATABASE_URL}}) too. Expansion happens on decoded
// values, never on the file's text, so an environment variable cannot inject
// YAML. Credential fields have the type Secret, which redacts itself wherever
// it is printed or marshalled, so a Config is safe to log.
//
// The package only computes: it reads the one file it is given, never writes,
// never logs, and reads the environment only through the getenv function
// passed to it.
package config
