/// Reported after every epoch. Return false from the callback to stop training, which then
/// throws `TrainingError.cancelled`.
public struct TrainingProgress: Sendable, Equatable {
  /// 1-based epoch just finished.
  public var epoch: Int
  public var epochs: Int
  /// Training loss of the epoch (for MF: RMSE over the training ratings seen during the epoch).
  public var loss: Double
  /// Metrics on the validation set, when one is given (for MF: "rmse", "mae").
  public var validation: [String: Double]
  public var elapsedSeconds: Double
  /// Estimated seconds until training ends.
  public var etaSeconds: Double

  public init(
    epoch: Int, epochs: Int, loss: Double, validation: [String: Double] = [:],
    elapsedSeconds: Double, etaSeconds: Double
  ) {
    self.epoch = epoch
    self.epochs = epochs
    self.loss = loss
    self.validation = validation
    self.elapsedSeconds = elapsedSeconds
    self.etaSeconds = etaSeconds
  }

  /// Validation RMSE, when a validation set was given.
  public var validationRMSE: Double? { validation["rmse"] }
}

public typealias TrainingProgressHandler = (TrainingProgress) -> Bool

/// The end of an SGD-style epoch: a loss that is not finite stops training (the learning rate
/// is too high for the data), and `progress` hears of the epoch, with the ETA extrapolated from
/// the time since `started` (monotonic seconds); it may stop training (`cancelled`).
func finishEpoch(
  _ epoch: Int, of epochs: Int, loss: Double, validation: [String: Double] = [:],
  started: Double, learningRate: Float, progress: TrainingProgressHandler?
) throws {
  if !loss.isFinite {
    throw TrainingError.invalidConfiguration(
      "training diverged at epoch \(epoch) (loss is not finite); use a lower learning rate than \(learningRate)"
    )
  }
  guard let progress else { return }
  let elapsed = monotonicSeconds() - started
  let report = TrainingProgress(
    epoch: epoch, epochs: epochs, loss: loss, validation: validation, elapsedSeconds: elapsed,
    etaSeconds: elapsed / Double(epoch) * Double(epochs - epoch))
  if !progress(report) { throw TrainingError.cancelled }
}

public enum TrainingError: Error, CustomStringConvertible, Sendable, Equatable {
  /// The progress callback asked to stop.
  case cancelled
  /// A hyperparameter is out of range; the message names it.
  case invalidConfiguration(String)
  /// The data cannot train this model (e.g. no rows).
  case invalidData(String)
  /// The kind exists in the design but is not built yet.
  case notImplemented(String)

  public var description: String {
    switch self {
    case .cancelled: return "training was cancelled"
    case .invalidConfiguration(let m): return m
    case .invalidData(let m): return m
    case .notImplemented(let m): return m
    }
  }
}

/// Monotonic seconds.
func monotonicSeconds() -> Double {
  var ts = timespec()
  clock_gettime(CLOCK_MONOTONIC, &ts)
  return Double(ts.tv_sec) + Double(ts.tv_nsec) * 1e-9
}

#if canImport(Glibc)
  import Glibc
#elseif canImport(Darwin)
  import Darwin
#endif
