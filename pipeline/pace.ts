/**
 * Paces a replay on event time: `wait(t)` resolves when as much wall time has passed since the
 * first call as event time has passed since the first tick, divided by the speed (`×N`).
 * `'max'` never waits. The first call fixes both origins; event time going backwards (a later
 * source starting earlier) does not wait.
 */
export class Pacer {
  readonly #speed: number | 'max';
  #eventOrigin = Number.NaN;
  #wallOrigin = 0;

  constructor(speed: number | 'max') {
    if (speed !== 'max' && !(Number.isFinite(speed) && speed > 0))
      throw new RangeError(`replay speed must be 'max' or a number above 0, got ${speed}`);
    this.#speed = speed;
  }

  wait(eventTimeMs: number): Promise<void> {
    if (this.#speed === 'max') return Promise.resolve();
    const now = performance.now();
    if (Number.isNaN(this.#eventOrigin)) {
      this.#eventOrigin = eventTimeMs;
      this.#wallOrigin = now;
      return Promise.resolve();
    }
    const due = this.#wallOrigin + (eventTimeMs - this.#eventOrigin) / this.#speed;
    if (due <= now) return Promise.resolve();
    return new Promise((resolve) => setTimeout(resolve, due - now));
  }
}
