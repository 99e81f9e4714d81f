namespace Ckpt;

public static class ToolInfo
{
    public const string Version = "0.1.0";
}
