// Command http_fetch is the built-in Talon tool that fetches a web page and
// returns its title and readable text. It is compiled to http_fetch.wasm
// and runs only inside the Talon sandbox; the operator's manifest
// (../http_fetch.yaml) decides which hosts it may reach.
package main
