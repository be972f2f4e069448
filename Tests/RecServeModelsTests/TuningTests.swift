import Foundation
import Testing

@testable import RecServeModels

/// `recserve train --tune N` (issue 11): the search is reproducible for a seed, keeps the
/// settings the user fixed, never sees held-out rows, and ends no worse on validation than the
/// settings it started from.
@Suite struct TuningTests {
  static func als(seed: UInt64 = 42) -> ImplicitModelConfig {
    .als(ALSConfig(dim: 16, iterations: 6, seed: seed, threads: 2))
  }

  /// ALS gives the same floats at any thread count, so a search over it must repeat exactly.
  @Test func theSearchIsReproducibleForASeed() throws {
    let data = try ImplicitModelsTests.plantedClusters()
    let (train, _) = data.leaveLastOutSplit(seed: 1)
    let first = try Tuner.tune(train: train, base: Self.als(), trials: 6)
    let again = try Tuner.tune(train: train, base: Self.als(), trials: 6)
    #expect(first.winner == again.winner)
    #expect(first.best == again.best)
    #expect(first.trials.map { $0.config } == again.trials.map { $0.config })
    #expect(
      first.trials.map { $0.scores.map(\.ndcg) } == again.trials.map { $0.scores.map(\.ndcg) })
    // Another seed draws other settings.
    let other = try Tuner.tune(train: train, base: Self.als(seed: 7), trials: 6)
    #expect(other.trials[1].config != first.trials[1].config)
    // Trial 0 is the given settings and reaches the full budget; the winner is at least as good
    // on validation.
    #expect(first.trials[0].config == Self.als())
    let full = 6
    let base = try #require(first.trials[0].scores.last)
    #expect(base.budget == full)
    let best = try #require(first.trials[first.winner].scores.last)
    #expect(best.budget == full)
    #expect(best.ndcg >= base.ndcg)
    // Successive halving: every trial ran the first rung, fewer went on.
    #expect(first.trials.allSatisfy { !$0.scores.isEmpty })
    #expect(first.trials.filter { $0.scores.count == 3 }.count < first.trials.count)
  }

  @Test func settingsTheUserGaveStayFixed() throws {
    let data = try ImplicitModelsTests.plantedClusters()
    var base = BPRConfig(dim: 8, epochs: 9, seed: 3, threads: 1)
    base.learningRate = 0.02
    let result = try Tuner.tune(
      train: data, base: .bpr(base), trials: 5, fixed: ["lr", "negative_sampling"])
    for trial in result.trials {
      guard case .bpr(let c) = trial.config else {
        Issue.record("a bpr search tried \(trial.config.kind)")
        continue
      }
      #expect(c.learningRate == 0.02)
      #expect(c.negativeSampling == .uniform)
    }
    // The others vary.
    let regs = Set(
      result.trials.map { t -> Float in
        if case .bpr(let c) = t.config { return c.regularization }
        return -1
      })
    #expect(regs.count > 1)
  }

  /// The rows a training holds out for its reported metrics carry a signal found nowhere else:
  /// each user's latest row is an item of its own that appears in no other row. A search that
  /// read them could score on them; it cannot, because it is handed the training rows only, and
  /// its validation rows are exactly one per user with two or more training rows.
  @Test func theSearchNeverSeesHeldOutRows() throws {
    let planted = try ImplicitModelsTests.plantedClusters()
    var rows: [InteractionRow] = []
    var perUser: [String: Int] = [:]
    for r in 0..<planted.count {
      let user = planted.userIds[Int(planted.users[r])]
      rows.append(
        InteractionRow(
          user: user, item: planted.itemIds[Int(planted.items[r])], rating: 1,
          timestamp: planted.timestamps[r]))
      perUser[user, default: 0] += 1
    }
    for user in perUser.keys {
      rows.append(
        InteractionRow(user: user, item: "secret-\(user)", rating: 1, timestamp: 2_000_000))
    }
    let data = try Interactions(rows: rows, source: "planted, with secret latest rows")
    let directory = TempDir()
    let result = try trainAndPublishImplicit(
      data: data, config: Self.als(), split: .leaveLastOut, modelsDirectory: directory.path,
      name: "tuned", tune: 4)
    let tuning = try #require(result.tuning)
    // Every held-out row is a secret item, and no secret item is in the model.
    #expect(result.testRows == perUser.count)
    #expect(result.model.itemIds.allSatisfy { !$0.hasPrefix("secret-") })
    #expect(tuning.validationRows == perUser.values.filter { $0 >= 2 }.count)
    // The record in model.json.
    let manifest = try String(
      contentsOfFile: result.directory + "/model.json", encoding: .utf8)
    #expect(manifest.contains("\"tuning\""))
    #expect(manifest.contains("successive halving"))
  }
}

extension TuningTests {
  /// The winner's-curse guard: a gain within the noise of a mean of per-user NDCG keeps the
  /// given settings; a gain beyond it, or the same gain on many more users, does not.
  @Test func aGainWithinTheNoiseKeepsTheGivenSettings() {
    // 500 users at NDCG about 0.03: the standard error of the difference is about 0.011.
    #expect(!Tuner.beatsBeyondNoise(0.038, 0.030, users: 500))
    #expect(Tuner.beatsBeyondNoise(0.045, 0.030, users: 500))
    // The same +0.008 on 6,000 users (about 0.003) is beyond the noise.
    #expect(Tuner.beatsBeyondNoise(0.038, 0.030, users: 6_000))
    #expect(!Tuner.beatsBeyondNoise(0.030, 0.030, users: 1_000_000))
    #expect(!Tuner.beatsBeyondNoise(0.020, 0.030, users: 6_000))
  }
}
