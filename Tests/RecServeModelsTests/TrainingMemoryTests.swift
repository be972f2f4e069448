import Testing

@testable import RecServeModels

@Suite struct TrainingMemoryTests {
  let shape = TrainingDataShape(
    rows: 100_000, users: 20_000, items: 500, idBytes: 120_000, longestHistory: 60)

  func part(_ estimate: TrainingMemoryEstimate, _ name: String) -> Int {
    estimate.parts.first { $0.name == name }?.bytes ?? 0
  }

  @Test func mfCountsFactorsAdamAndTheBestEpochCopy() {
    let sgd = TrainingMemory.estimate(mf: MFConfig(dim: 1024), data: shape)
    let parameters = (20_000 + 500) * 1025 * 4
    #expect(part(sgd, "parameters") == parameters)
    #expect(part(sgd, "Adam moments") == 0)
    var adam = MFConfig(dim: 1024)
    adam.use(.adam)
    adam.earlyStoppingPatience = 3
    let withAdam = TrainingMemory.estimate(mf: adam, data: shape)
    #expect(part(withAdam, "Adam moments") >= 2 * parameters)
    #expect(part(withAdam, "best-epoch copy") == parameters)
    #expect(withAdam.bytes > sgd.bytes + 3 * parameters - 1)
    #expect(part(sgd, "data") >= 100_000 * TrainingMemory.bytesPerRow)
    #expect(sgd.description.hasPrefix("parameters 81 MiB, data 8 MiB"))
  }

  @Test func sasrecCountsAdamAGradientPerThreadAndActivations() {
    let one = TrainingMemory.estimate(.sasrec(SASRecConfig(dim: 128, threads: 1)), data: shape)
    let four = TrainingMemory.estimate(.sasrec(SASRecConfig(dim: 128, threads: 4)), data: shape)
    let parameters = part(one, "parameters")
    #expect(
      parameters == SASRecLayout(dim: 128, heads: 1, blocks: 2, maxlen: 200, items: 500).count * 4)
    #expect(part(one, "Adam moments") == 2 * parameters)
    #expect(part(one, "per-thread gradients") == parameters)
    #expect(part(four, "per-thread gradients") == 4 * parameters)
    #expect(part(four, "activations") == 4 * part(one, "activations"))
    // Longer histories (up to maxlen) need more attention memory.
    var long = shape
    long.longestHistory = 5000
    let longer = TrainingMemory.estimate(.sasrec(SASRecConfig(dim: 128, threads: 1)), data: long)
    #expect(part(longer, "activations") > part(one, "activations"))
  }

  @Test func implicitFactorModelsScaleWithDim() {
    let small = TrainingMemory.estimate(.bpr(BPRConfig(dim: 32)), data: shape)
    let large = TrainingMemory.estimate(.bpr(BPRConfig(dim: 4096)), data: shape)
    #expect(large.bytes > 100 * small.bytes / 2)
    let als = TrainingMemory.estimate(.als(ALSConfig(dim: 64)), data: shape)
    #expect(part(als, "parameters") == (20_000 + 500) * 64 * 4)
  }

  @Test func shapeOfLoadedInteractions() throws {
    let data = try Interactions(rows: [
      InteractionRow(user: "a", item: "x"), InteractionRow(user: "a", item: "y"),
      InteractionRow(user: "bb", item: "x"),
    ])
    let shape = TrainingDataShape(data)
    #expect(shape == TrainingDataShape(rows: 3, users: 2, items: 2, idBytes: 5, longestHistory: 2))
  }
}
