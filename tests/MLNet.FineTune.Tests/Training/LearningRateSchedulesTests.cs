using MLNet.FineTune.Training;

namespace MLNet.FineTune.Tests.Training;

[TestClass]
public sealed class LearningRateSchedulesTests
{
    // Values worked out by hand from transformers' definitions (warmup 10, 110 steps in all: 100 after warmup).
    [TestMethod]
    [DataRow(LearningRateSchedule.Linear, 0, 0.0)]
    [DataRow(LearningRateSchedule.Linear, 3, 0.3)]
    [DataRow(LearningRateSchedule.Linear, 10, 1.0)]
    [DataRow(LearningRateSchedule.Linear, 35, 0.75)]
    [DataRow(LearningRateSchedule.Linear, 60, 0.5)]
    [DataRow(LearningRateSchedule.Linear, 109, 0.01)]
    [DataRow(LearningRateSchedule.Linear, 110, 0.0)]
    [DataRow(LearningRateSchedule.Linear, 130, 0.0)]          // past the end: clamped at 0
    [DataRow(LearningRateSchedule.Cosine, 5, 0.5)]
    [DataRow(LearningRateSchedule.Cosine, 10, 1.0)]
    [DataRow(LearningRateSchedule.Cosine, 35, 0.8535533905932737)]   // 0.5 (1 + cos(pi/4))
    [DataRow(LearningRateSchedule.Cosine, 60, 0.5)]                  // 0.5 (1 + cos(pi/2))
    [DataRow(LearningRateSchedule.Cosine, 85, 0.14644660940672627)]  // 0.5 (1 + cos(3pi/4))
    [DataRow(LearningRateSchedule.Cosine, 110, 0.0)]
    [DataRow(LearningRateSchedule.Constant, 4, 0.4)]
    [DataRow(LearningRateSchedule.Constant, 10, 1.0)]
    [DataRow(LearningRateSchedule.Constant, 109, 1.0)]
    public void MultiplierMatchesTransformersDefinition(LearningRateSchedule schedule, int step, double expected)
    {
        double actual = LearningRateSchedules.Multiplier(schedule, step, warmupSteps: 10, totalSteps: 110);
        Console.WriteLine($"{schedule} step {step}: {actual:R} (expected {expected:R})");
        Assert.AreEqual(expected, actual, 1e-12);
    }

    [TestMethod]
    public void NoWarmupStartsAtFullRate()
    {
        Assert.AreEqual(1.0, LearningRateSchedules.Multiplier(LearningRateSchedule.Linear, 0, 0, 50), 1e-15);
        Assert.AreEqual(1.0, LearningRateSchedules.Multiplier(LearningRateSchedule.Cosine, 0, 0, 50), 1e-15);
        Assert.AreEqual(0.5, LearningRateSchedules.Multiplier(LearningRateSchedule.Linear, 25, 0, 50), 1e-15);
        Assert.AreEqual(1.0, LearningRateSchedules.Multiplier(LearningRateSchedule.Constant, 0, 0, 50), 1e-15);
    }

    [TestMethod]
    public void WarmupStepsWinOverRatioWhichRoundsUp()
    {
        Assert.AreEqual(7, LearningRateSchedules.WarmupSteps(7, 0.5, 100));
        Assert.AreEqual(10, LearningRateSchedules.WarmupSteps(0, 0.1, 95));   // ceil(9.5)
        Assert.AreEqual(10, LearningRateSchedules.WarmupSteps(0, 0.1, 100));
        Assert.AreEqual(0, LearningRateSchedules.WarmupSteps(0, 0.0, 100));
    }
}
