// Command github is the built-in Talon tool that reads GitHub issues, pull
// requests and comments through the REST API at api.github.com. It is
// compiled to github.wasm and runs only inside the Talon sandbox. When the
// calling user has stored a vault entry named "github" (and the operator's
// manifest grants it) the host authenticates the requests with it; the tool
// never sees the token. Otherwise the requests are anonymous.
package main
