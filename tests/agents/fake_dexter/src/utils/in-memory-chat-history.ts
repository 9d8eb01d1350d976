// Fake Dexter InMemoryChatHistory: counts the completed turns it holds.
export class InMemoryChatHistory {
  private readonly queries: string[] = [];
  private answers = 0;

  constructor(readonly model?: string) {}

  saveUserQuery(query: string) {
    this.queries.push(query);
  }

  async saveAnswer(_answer: string) {
    this.answers++;
  }

  turns() {
    return this.answers;
  }
}
