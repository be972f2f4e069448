import Foundation
import Testing

@testable import RecServeModels

/// Planted item chains (`SyntheticSequences`): what a user did last says what comes next.
enum Chains {
  /// Each user walks several of 50 chains of 20, so the items a user has touched leave many
  /// candidates and only the order says which comes next.
  static let config = SyntheticSequences.Config(
    users: 600, items: 1000, seed: 3, chainLength: 20, events: 20...40, noise: 0.03, jump: 0.15)
  static let data: Interactions = try! SyntheticSequences.generate(config)
  static let split = data.leaveLastOutSplit(seed: 1)

  static let sasrecConfig = SASRecConfig(
    dim: 32, maxlen: 40, blocks: 2, heads: 2, dropout: 0.1, learningRate: 0.005, batchSize: 64,
    epochs: 60, seed: 5, threads: 2)

  /// Trained once for the suite, on the training split.
  static let model: SASRecModel = try! SASRecTrainer.train(split.train, config: sasrecConfig)

  /// Item id "i<k>" of the chain item after `id`, if any.
  static func next(_ id: String) -> String? {
    let k = Int(id.dropFirst())! - 1
    return SyntheticSequences.successor(of: k, config: config).map { "i\($0 + 1)" }
  }

  static func hitRate(_ model: any RecommendationModel) -> Double {
    let e = RankingEvaluator.evaluate(
      model: model, train: split.train, test: split.test,
      config: RankingEvaluationConfig(ks: [10], fullRanking: true, sampled: false, threads: 2))
    return e.full[10]!.hit
  }
}

@Suite struct SASRecTrainingTests {
  /// Order-blind matrix factorisation (no recency weight) sees which chains a user walks, not
  /// where on them the user is; SASRec reads the order.
  @Test func findsTheChainsThatMatrixFactorisationCannot() throws {
    let sasrec = Chains.hitRate(Chains.model)
    let bpr = Chains.hitRate(
      try BPRTrainer.train(
        Chains.split.train, config: BPRConfig(dim: 32, epochs: 60, seed: 5, recencyBoost: 0)))
    let als = Chains.hitRate(
      try ALSTrainer.train(
        Chains.split.train, config: ALSConfig(dim: 32, seed: 5, recencyBoost: 0)))
    print("next-item HR@10 on planted chains: SASRec \(sasrec), BPR \(bpr), ALS \(als)")
    #expect(sasrec > 0.6, "SASRec next-item HR@10 \(sasrec)")
    #expect(
      sasrec > 2 * max(bpr, als), "next-item HR@10: SASRec \(sasrec), BPR \(bpr), ALS \(als)")
  }

  /// The recency weight (BPR's and ALS's default) moves a user's vector toward their latest
  /// items, which on chains are next to the item that comes next: both find far more next items
  /// with it than without.
  @Test func recencyWeightingFindsMoreNextItems() throws {
    func bpr(_ boost: Float) throws -> Double {
      Chains.hitRate(
        try BPRTrainer.train(
          Chains.split.train, config: BPRConfig(dim: 32, epochs: 60, seed: 5, recencyBoost: boost)))
    }
    func als(_ boost: Float) throws -> Double {
      Chains.hitRate(
        try ALSTrainer.train(
          Chains.split.train, config: ALSConfig(dim: 32, seed: 5, recencyBoost: boost)))
    }
    let (bprPlain, bprRecent) = (try bpr(0), try bpr(BPRConfig().recencyBoost))
    let (alsPlain, alsRecent) = (try als(0), try als(ALSConfig().recencyBoost))
    print(
      "next-item HR@10 on chains, without / with recency: BPR \(bprPlain) / \(bprRecent), ALS \(alsPlain) / \(alsRecent)"
    )
    #expect(bprRecent > 1.5 * bprPlain, "BPR HR@10 \(bprRecent) with recency, \(bprPlain) without")
    #expect(alsRecent > 1.5 * alsPlain, "ALS HR@10 \(alsRecent) with recency, \(alsPlain) without")
  }

  /// A session of a few consecutive chain items, from a user nobody has seen: the best item
  /// not in the session is the chain's next one.
  @Test func recentItemsOfAChainRankItsContinuation() throws {
    let model = Chains.model
    var right = 0
    var asked = 0
    for chain in stride(from: 0, to: 50, by: 5) {
      let first = chain * Chains.config.chainLength + 1
      let session = (first..<(first + 4)).map { "i\($0)" }
      let recent = session.compactMap { model.itemIndex($0) }
      guard recent.count == session.count, let want = Chains.next(session.last!) else { continue }
      asked += 1
      let scores = try #require(queryScores(model, recent: recent))
      let top = scores.withUnsafeBufferPointer {
        TopK.select(scores: $0.baseAddress!, count: model.itemCount, k: 3) { recent.contains($0) }
      }
      let ranked = top.map { model.itemIds[Int($0.index)] }
      if ranked.first == want { right += 1 }
      #expect(ranked.contains(want), "after \(session): \(ranked), want \(want)")
    }
    #expect(asked >= 8)
    #expect(right >= asked - 2, "\(right) of \(asked) sessions ranked their continuation first")
  }

  /// A known user's stored state is what encoding its training sequence gives; with recent
  /// items, the history comes first.
  @Test func userStatesAreTheEncodedSequences() throws {
    let model = Chains.model
    var state = [Float](repeating: 0, count: model.dim)
    for u in [Int32(0), 7, Int32(model.userCount - 1)] {
      let sequence = model.sequence(user: u)
      state.withUnsafeMutableBufferPointer {
        model.encode(
          history: sequence, recent: UnsafeBufferPointer(start: nil, count: 0),
          into: $0.baseAddress!)
      }
      for k in 0..<model.dim {
        #expect(abs(state[k] - model.userStates[Int(u) * model.dim + k]) < 1e-5)
      }
      // History + one item = the same as the sequence with that item appended.
      let extra: [Int32] = [3]
      var viaQuery = [Float](repeating: 0, count: model.dim)
      _ = extra.withUnsafeBufferPointer { r in
        viaQuery.withUnsafeMutableBufferPointer {
          model.query(user: u, recentItems: r, into: $0.baseAddress!)
        }
      }
      let appended = Array(sequence) + extra
      appended.withUnsafeBufferPointer { a in
        state.withUnsafeMutableBufferPointer {
          model.encode(
            history: a, recent: UnsafeBufferPointer(start: nil, count: 0), into: $0.baseAddress!)
        }
      }
      #expect(viaQuery == state)
    }
  }

  @Test func publishedVersionLoadsAndScoresIdentically() throws {
    let dir = TempDir()
    let (version, path) = try ModelStore.publish(
      Chains.model,
      manifest: ModelManifest(
        kind: "sasrec", name: "chains",
        hyperparameters: Chains.sasrecConfig.hyperparameters),
      modelsDirectory: dir.path, name: "chains")
    #expect(version == 1)
    let loaded = try ModelStore.load(versionDirectory: path)
    let model = try #require(loaded.model as? SASRecModel)
    let original = Chains.model
    #expect(model.userIds == original.userIds && model.itemIds == original.itemIds)
    #expect(model.architecture == original.architecture)
    var a = [Float](repeating: 0, count: model.itemCount)
    var b = [Float](repeating: 0, count: model.itemCount)
    for u in [Int32(0), 11, Int32(model.userCount - 1)] {
      original.scoreAll(user: u, into: &a)
      model.scoreAll(user: u, into: &b)
      #expect(a == b)
      #expect(Array(model.seenItems(user: u)) == Array(original.seenItems(user: u)))
      #expect(Array(model.sequence(user: u)) == Array(original.sequence(user: u)))
      #expect(model.predict(user: u, item: 5) == original.predict(user: u, item: 5))
    }
    let recent: [Int32] = [4, 5, 6]
    let a1 = try #require(queryScores(original, recent: recent))
    #expect(a1 == queryScores(model, recent: recent))
    #expect(Array(model.itemPopularity) == Array(original.itemPopularity))
  }

  @Test func sameSeedSameModelOnOneThread() throws {
    let data = try SyntheticSequences.generate(
      SyntheticSequences.Config(users: 40, items: 60, seed: 9, chainLength: 6, events: 5...12))
    var config = SASRecConfig(
      dim: 8, maxlen: 10, blocks: 1, heads: 2, epochs: 3, seed: 4, threads: 1)
    let a = try SASRecTrainer.train(data, config: config)
    let b = try SASRecTrainer.train(data, config: config)
    let count = a.layout.count
    #expect(
      Array(UnsafeBufferPointer(start: a.parameters, count: count))
        == Array(UnsafeBufferPointer(start: b.parameters, count: count)))
    config.seed = 5
    let c = try SASRecTrainer.train(data, config: config)
    #expect(
      Array(UnsafeBufferPointer(start: a.parameters, count: count))
        != Array(UnsafeBufferPointer(start: c.parameters, count: count)))
  }

  @Test func progressIsReportedAndCancelStops() throws {
    let data = try SyntheticSequences.generate(
      SyntheticSequences.Config(users: 40, items: 60, seed: 9, chainLength: 6, events: 5...12))
    let config = SASRecConfig(dim: 8, maxlen: 10, blocks: 1, epochs: 50, seed: 4, threads: 2)
    var reports: [TrainingProgress] = []
    #expect(throws: TrainingError.cancelled) {
      _ = try SASRecTrainer.train(data, config: config) { p in
        reports.append(p)
        return p.epoch < 3
      }
    }
    #expect(reports.map(\.epoch) == [1, 2, 3])
    // Cancelled between batches: before the first epoch ends.
    let asked = Counter()
    var epochs = 0
    #expect(throws: TrainingError.cancelled) {
      _ = try SASRecTrainer.train(
        data, config: SASRecConfig(dim: 8, maxlen: 10, blocks: 1, batchSize: 4, epochs: 50),
        progress: { _ in
          epochs += 1
          return true
        }, isCancelled: { asked.increment() > 3 })
    }
    #expect(epochs == 0 && asked.value == 5)
    #expect(reports.allSatisfy { $0.loss.isFinite && $0.loss > 0 && $0.epochs == 50 })
    #expect(reports.allSatisfy { ($0.validation["correct"] ?? -1) >= 0 })
  }

  @Test func badConfigurationAndDataAreNamed() throws {
    let data = try SyntheticSequences.generate(
      SyntheticSequences.Config(users: 10, items: 30, seed: 9, chainLength: 6, events: 5...8))
    func reason(_ config: SASRecConfig, _ d: Interactions? = nil) -> String {
      do {
        _ = try SASRecTrainer.train(d ?? data, config: config)
        return "trained"
      } catch {
        return "\(error)"
      }
    }
    #expect(reason(SASRecConfig(dim: 10, heads: 3)) == "heads must divide dim (10); got 3")
    #expect(reason(SASRecConfig(dropout: 1)) == "dropout must be in [0, 1) (got 1.0)")
    #expect(reason(SASRecConfig(maxlen: 0)) == "maxlen must be in 1...2048 (got 0)")
    #expect(reason(SASRecConfig(batchSize: 0)) == "batch size must be in 1...65536 (got 0)")
    let single = try Interactions(rows: [
      InteractionRow(user: "a", item: "x"), InteractionRow(user: "b", item: "y"),
    ])
    #expect(
      reason(SASRecConfig(epochs: 1), single)
        == "inline interactions: no user has two or more interactions; SASRec learns what follows what"
    )
  }
}

/// A thread-safe count, for callbacks that must be @Sendable.
final class Counter: @unchecked Sendable {
  private let lock = NSLock()
  private var count = 0
  var value: Int { lock.withLock { count } }
  /// The count before this call.
  func increment() -> Int {
    lock.withLock {
      count += 1
      return count - 1
    }
  }
}
