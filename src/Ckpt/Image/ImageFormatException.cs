namespace Ckpt.Image;

/// <summary>The image is truncated, corrupted, foreign or incompatible.</summary>
public sealed class ImageFormatException(string message) : Exception(message);
