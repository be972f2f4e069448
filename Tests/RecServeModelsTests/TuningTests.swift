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
      first.trials.map { $0.scores.map(\.value) } == again.trials.map { $0.scores.map(\.value) })
    // Another seed draws other settings.
    let other = try Tuner.tune(train: train, base: Self.als(seed: 7), trials: 6)
    #expect(other.trials[2].config != first.trials[2].config)
    // Trial 1 is the given settings without the recency weight, before any random draw.
    guard case .als(var plain) = Self.als() else { return }
    plain.recencyBoost = 0
    #expect(first.trials[1].config == .als(plain))
    // Trial 0 is the given settings and reaches the full budget; the winner is at least as good
    // on validation.
    #expect(first.trials[0].config == Self.als())
    let full = 6
    let base = try #require(first.trials[0].scores.last)
    #expect(base.budget == full)
    let best = try #require(first.trials[first.winner].scores.last)
    #expect(best.budget == full)
    #expect(best.value >= base.value)
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
  /// The winner's-curse guard pairs users: a gain that every user shares is beyond the noise
  /// even when the users' scores differ widely; the same mean gain made of large gains and
  /// losses that nearly cancel is not; users scored by only one side are left out.
  @Test func aGainWithinTheNoiseKeepsTheGivenSettings() {
    let users = (0..<500).map { Int32($0) }
    // Scores spread over [0, 1] (hard and easy users), the trial +0.01 on every user.
    let base = users.map { ($0, Double($0 % 10) / 10) }
    let steady = users.map { ($0, Double($0 % 10) / 10 + 0.01) }
    let g = Tuner.pairedGain(steady, over: base)
    #expect(abs(g.mean - 0.01) < 1e-12)
    #expect(g.standardError < 1e-9)
    #expect(Tuner.beatsBeyondNoise(g, standardErrors: 1.5))
    // The same +0.01 on average, from +0.51 and -0.49 alternately: noise.
    let swinging = users.map { ($0, Double($0 % 10) / 10 + ($0 % 2 == 0 ? 0.51 : -0.49)) }
    let h = Tuner.pairedGain(swinging, over: base)
    #expect(abs(h.mean - 0.01) < 1e-9)
    #expect(!Tuner.beatsBeyondNoise(h, standardErrors: 1.5))
    // A loss never wins, and neither does no gain.
    #expect(!Tuner.beatsBeyondNoise(Tuner.pairedGain(base, over: steady), standardErrors: 1.5))
    #expect(!Tuner.beatsBeyondNoise(Tuner.pairedGain(base, over: base), standardErrors: 1.5))
    // The bar rises with the number of trials competing at the last rung (the one-sided normal
    // quantile at 10% / candidates).
    #expect(abs(Tuner.guardStandardErrors(candidates: 1) - 1.2816) < 1e-3)
    #expect(abs(Tuner.guardStandardErrors(candidates: 4) - 1.9600) < 1e-3)
    #expect(Tuner.guardStandardErrors(candidates: 10) > Tuner.guardStandardErrors(candidates: 4))
    // Only users on both sides count: the trial's extra user 999 is ignored.
    let extra = steady + [(Int32(999), 1.0)]
    #expect(abs(Tuner.pairedGain(extra, over: base).mean - 0.01) < 1e-12)
  }
}

extension TuningTests {
  static func ratings() throws -> Interactions {
    try SyntheticData.generate(users: 150, items: 120, seed: 11, dim: 4, density: 0.15)
  }

  /// MF's search scores trials by RMSE on a tenth of the training rows: it is reproducible for
  /// a seed, keeps a dim the user gave, and beats or keeps the given settings' validation RMSE.
  @Test func theMFSearchIsReproducibleAndKeepsFixedSettings() throws {
    let data = try Self.ratings()
    let base = MFConfig(dim: 8, epochs: 9, seed: 5)
    let first = try Tuner.tune(train: data, base: base, trials: 6, fixed: ["dim"])
    let again = try Tuner.tune(train: data, base: base, trials: 6, fixed: ["dim"])
    #expect(
      first.trials.map { $0.scores.map(\.value) } == again.trials.map { $0.scores.map(\.value) })
    #expect(first.winner == again.winner)
    #expect(first.metric == "rmse")
    #expect(first.trials.allSatisfy { $0.config.dim == 8 })
    #expect(Set(first.trials.map { $0.config.learningRate }).count > 1)
    #expect(first.trials[0].config == base)
    let given = try #require(first.trials[0].scores.last)
    let won = try #require(first.trials[first.winner].scores.last)
    #expect(given.budget == 9 && won.budget == first.trials[first.winner].config.epochs)
    // Epochs are searched too (1-3x the given), and fixed when the user gives them.
    #expect(first.trials.allSatisfy { [9, 18, 27].contains($0.config.epochs) })
    let fixedEpochs = try Tuner.tune(train: data, base: base, trials: 6, fixed: ["epochs"])
    #expect(fixedEpochs.trials.allSatisfy { $0.config.epochs == 9 })
    #expect(won.value <= given.value)
    #expect(
      first.validationRows == data.count
        - data.randomSplit(holdout: 0.1, seed: 5 ^ 0x7475_6E65).train.count)
  }

  /// `trainAndPublishMF` hands the search its training split only: the search it records is
  /// exactly the one run on that split, so the held-out rows cannot have moved any score.
  @Test func theMFSearchSeesOnlyTheTrainingSplit() throws {
    let data = try Self.ratings()
    let config = MFConfig(dim: 8, epochs: 9, seed: 5)
    let directory = TempDir()
    let result = try trainAndPublishMF(
      data: data, config: config, holdout: 0.2, modelsDirectory: directory.path, name: "m",
      tune: 4)
    let tuning = try #require(result.tuning)
    let (train, test) = data.randomSplit(holdout: 0.2, seed: 5)
    #expect(result.testRows == test.count)
    let direct = try Tuner.tune(train: train, base: config, trials: 4)
    #expect(
      tuning.trials.map { $0.scores.map(\.value) } == direct.trials.map { $0.scores.map(\.value) })
    #expect(tuning.validationRows == direct.validationRows)
    #expect(tuning.validationRows < train.count / 5)
    let manifest = try String(contentsOfFile: result.directory + "/model.json", encoding: .utf8)
    #expect(manifest.contains("\"validation rmse\""))
    guard case .object(let root) = try JSONValue.parse(manifest),
      case .object(let hyper)? = root["hyperparameters"], let record = hyper["tuning"]
    else {
      Issue.record("model.json has no hyperparameters.tuning")
      return
    }
    let line = try #require(Tuner.summary(of: record))
    #expect(line.hasPrefix("trial \(tuning.winner + 1) of 4 won ("))
    #expect(line.contains("validation rmse"))
  }
}
