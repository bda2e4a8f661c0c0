// Live updates: a long-poll on GET /api/v1/changes (fetch can send the bearer token,
// EventSource could not). Every answer with a new revision refreshes the open page;
// an answer after the wait without change refreshes it too, for the times that move
// without a change (last check-in). Failures retry after a second.

import { ApiError, get } from "./api.js";

const WAIT_SECONDS = 15;
const RETRY_MS = 1000;

export class ChangeWatcher {
  constructor(onChange, onHealth) {
    this.onChange = onChange;
    this.onHealth = onHealth;
    this.revision = null;
    this.controller = null;
    this.running = false;
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.loop();
  }

  stop() {
    this.running = false;
    if (this.controller) this.controller.abort();
  }

  async loop() {
    while (this.running) {
      this.controller = new AbortController();
      const since = this.revision === null ? "" : `&since=${encodeURIComponent(this.revision)}`;
      try {
        const answer = await get(`/api/v1/changes?wait_seconds=${WAIT_SECONDS}${since}`,
          { signal: this.controller.signal });
        this.revision = answer.revision;
        this.onHealth(true);
        await this.onChange(answer);
      } catch (error) {
        if (!this.running || error.name === "AbortError") return;
        if (error instanceof ApiError && error.status === 401) return;
        this.onHealth(false, error.message);
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }
}
