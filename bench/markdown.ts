/** A Markdown table; cells are escaped just enough for pipes not to split them. */
export function table(header: string[], rows: Array<Array<string | number>>): string {
  const cell = (value: string | number) => String(value).replaceAll('|', '\\|')
  const lines = [
    `| ${header.map(cell).join(' | ')} |`,
    `|${header.map(() => '---').join('|')}|`,
    ...rows.map((row) => `| ${row.map(cell).join(' | ')} |`),
  ]
  return lines.join('\n')
}

/** Collects the report section by section, printing each as soon as it is known. */
export class Report {
  private readonly parts: string[] = []

  add(text: string): void {
    this.parts.push(text)
    console.log(`${text}\n`)
  }

  section(title: string, ...blocks: string[]): void {
    this.add([`## ${title}`, ...blocks].join('\n\n'))
  }

  toString(): string {
    return `${this.parts.join('\n\n')}\n`
  }
}
