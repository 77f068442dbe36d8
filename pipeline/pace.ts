/**
 * Paces a replay by the ticks' original event-time spacing: `wait(t)` resolves once the wall
 * time since the first call is at least (t - first t) / speed. The first call anchors both
 * clocks and returns at once; an event time at or before one already passed returns at once
 * too. Targets are absolute (anchor + elapsed / speed), so waits never add up to a drift.
 *
 * One timer per call that has to wait, none otherwise: callers wait per record or per slice of
 * a record (pipeline/replay.ts), never per tick. `max` never waits.
 */
import { ErrorCode, TickstreamError } from '../codecs/errors.js';

export class Pacer {
  readonly #speed: number | 'max';
  #anchorEventMs = Number.NaN;
  #anchorWallMs = 0;

  constructor(speed: number | 'max') {
    if (speed !== 'max' && !(speed > 0 && Number.isFinite(speed)))
      throw new TickstreamError(
        ErrorCode.USAGE,
        `a pacing speed must be 'max' or a positive number (60: sixty times the recorded pace), got ${speed}`,
      );
    this.#speed = speed;
  }

  async wait(eventTimeMs: number): Promise<void> {
    if (this.#speed === 'max') return;
    if (Number.isNaN(this.#anchorEventMs)) {
      this.#anchorEventMs = eventTimeMs;
      this.#anchorWallMs = performance.now();
      return;
    }
    const due = this.#anchorWallMs + (eventTimeMs - this.#anchorEventMs) / this.#speed;
    const ahead = due - performance.now();
    if (ahead > 0) await new Promise((resolve) => setTimeout(resolve, ahead));
  }
}
