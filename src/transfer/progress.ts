/** Progress as events: the library emits them, a command decides whether and how to show them. */
export interface ProgressEvent {
  phase: string
  done: number
  total?: number
  bytes: number
  totalBytes?: number
}

export type ProgressListener = (event: ProgressEvent) => void
