// Package llmtest provides a scripted fake language model server for tests:
// an httptest server on 127.0.0.1 that speaks both the OpenAI Chat
// Completions wire protocol (JSON and SSE streaming) and Anthropic's
// Messages protocol (JSON and the real SSE event sequence), so that the real
// SDK-based providers of package llm, and whole gateways started as child
// processes, can be tested end to end without the internet.
//
// It never reaches the network beyond loopback and never checks API keys:
// a test decides every answer with a Handler and inspects every request
// with Server.Requests.
package llmtest
